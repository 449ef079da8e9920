//! The HTTP API under `/v1/` (JSON), its OpenAPI document and Prometheus metrics.
//!
//! Errors are JSON `{"error": "<code>", "message": "<what went wrong>"}` with a 4xx status for bad
//! requests (malformed input, bad signatures, replays, overdrafts) and 5xx only for node faults.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridmesh_ledger::crypto::Parallelism;
use gridmesh_ledger::devices::DeviceStatus;
use gridmesh_ledger::mempool::{decode_and_verify, decode_and_verify_batch};
use gridmesh_ledger::readers::DeviceReader;
use gridmesh_ledger::{AdmissionError, VerifiedTx};
use gridmesh_types::{Address, Amount, Hash32};
use serde::Deserialize;
use utoipa::OpenApi;

pub use gridmesh_api::chain::*;
pub use gridmesh_api::MAX_BATCH_TXS;

use crate::Shared;

/// Largest accepted request body (a hex-encoded transaction is well below this).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest accepted batch body: `MAX_BATCH_TXS` hex transactions of the largest size.
const MAX_BATCH_BODY_BYTES: usize =
    MAX_BATCH_TXS * (2 * gridmesh_ledger::tx::MAX_TX_BYTES + 8) + 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gridmesh node API",
        description = "Ledger of a community energy network."
    ),
    paths(
        status,
        crate::events::get_events,
        crate::api_dashboard::get_history,
        crate::api_dashboard::get_blocks,
        crate::api_dashboard::get_prices_chart,
        crate::api_dashboard::get_depth_chart,
        crate::api_dashboard::get_orders,
        crate::api_dashboard::get_trades,
        crate::api_dashboard::get_grid_tariff,
        crate::api_dashboard::get_feedin_tariff,
        crate::api_feeder::get_feeder,
        crate::api_feeder::get_feeder_chart,
        crate::api_feeder::get_feeder_profile,
        crate::api_home::post_challenge,
        crate::api_home::post_session,
        crate::api_home::get_home,
        crate::api_home::get_home_chart,
        crate::api_home::get_money_chart,
        crate::api_home::get_plan_chart,
        crate::api_home::get_grants,
        crate::api_home::put_grant,
        crate::api_home::delete_grant,
        submit_tx,
        submit_txs,
        get_account,
        get_pending,
        delete_pending,
        get_block,
        get_tx,
        get_market,
        get_market_slot,
        get_envelope,
        get_grid,
        post_pcc,
        get_device,
        crate::api_gateway::get_gateway,
        crate::api_gateway::get_commitment,
        crate::api_gateway::get_proof,
        crate::api_economics::get_supply
    ),
    components(schemas(
        StatusResponse,
        SubmitRequest,
        SubmitResponse,
        BatchRequest,
        BatchResponse,
        BatchItem,
        AccountResponse,
        gridmesh_api::chain::PendingTx,
        gridmesh_api::chain::PendingView,
        gridmesh_api::chain::DroppedView,
        BlockResponse,
        TxView,
        TxStatusResponse,
        ReceiptView,
        EventView,
        ErrorBody,
        gridmesh_api::market::MarketInfo,
        gridmesh_api::market::TariffPeriod,
        EnvelopeView,
        gridmesh_api::market::FlexRequestView,
        gridmesh_api::market::SlotView,
        gridmesh_api::market::DepthLevel,
        gridmesh_api::market::MarketView,
        gridmesh_api::market::TradeView,
        gridmesh_api::market::SettlementView,
        gridmesh_api::market::BillView,
        gridmesh_api::market::UtilityView,
        gridmesh_api::market::DeviceReadingView,
        GridView,
        DeviceView,
        GridEventView,
        OperatorView,
        gridmesh_api::chain::UpstreamView,
        PccReport,
        crate::api_gateway::GatewayView,
        crate::api_gateway::CommitmentView,
        crate::api_gateway::ProofView,
        crate::api_economics::SupplyView,
        gridmesh_api::tariff::PricePoint,
        crate::api_economics::EpochView,
        crate::events::NodeEvent,
        crate::api_dashboard::PriceRow,
        crate::api_dashboard::PriceHistory,
        crate::api_dashboard::BlockSummary,
        crate::api_dashboard::BlockList,
        crate::api_dashboard::OrderView,
        crate::api_dashboard::OrderList,
        crate::api_dashboard::MyTradeView,
        crate::api_dashboard::MyTradeList,
        crate::api_feeder::FeederView,
        crate::api_feeder::FeederSlotView,
        crate::api_feeder::FeederDayView,
        crate::api_feeder::FeederPhasesView,
        crate::api_feeder::PhaseRangeView,
        crate::api_feeder::HomeLiveView,
        crate::api_home::ChallengeRequest,
        crate::api_home::ChallengeResponse,
        crate::api_home::SessionRequest,
        crate::api_home::SessionResponse,
        crate::api_home::GrantsView,
        crate::api_home::HomeSlot,
        crate::api_home::HomeDevice,
        crate::api_home::HeldReading,
        crate::api_home::DeviceNow,
        crate::api_home::HomeTotals,
        crate::api_home::HomeView
    ))
)]
pub struct ApiDoc;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/tx", post(submit_tx))
        .route(
            "/v1/txs",
            post(submit_txs).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
        .route("/v1/tx/{hash}", get(get_tx))
        .route("/v1/accounts/{address}", get(get_account))
        .route(
            "/v1/accounts/{address}/pending",
            get(get_pending).delete(delete_pending),
        )
        .route("/v1/blocks/{height}", get(get_block))
        .route("/v1/market", get(get_market))
        .route("/v1/market/slots/{slot}", get(get_market_slot))
        .route("/v1/market/slots/{slot}/envelope", get(get_envelope))
        .route("/v1/grid", get(get_grid))
        .route("/v1/devices/{address}", get(get_device))
        .route("/v1/grid/pcc", post(post_pcc))
        .route("/v1/gateway", get(crate::api_gateway::get_gateway))
        .route("/v1/supply", get(crate::api_economics::get_supply))
        .route(
            "/v1/telemetry/{device}/{slot}",
            get(crate::api_gateway::get_commitment),
        )
        .route(
            "/v1/telemetry/{device}/{slot}/proof/{index}",
            get(crate::api_gateway::get_proof),
        )
        .route("/v1/events", get(crate::events::get_events))
        .route("/v1/market/history", get(crate::api_dashboard::get_history))
        .route("/v1/blocks", get(crate::api_dashboard::get_blocks))
        .route("/v1/market/orders", get(crate::api_dashboard::get_orders))
        .route("/v1/market/trades", get(crate::api_dashboard::get_trades))
        .route(
            "/v1/tariff/grid",
            get(crate::api_dashboard::get_grid_tariff),
        )
        .route(
            "/v1/tariff/feedin",
            get(crate::api_dashboard::get_feedin_tariff),
        )
        .route("/v1/grid/feeder", get(crate::api_feeder::get_feeder))
        .route(
            "/v1/charts/feeder.svg",
            get(crate::api_feeder::get_feeder_chart),
        )
        .route(
            "/v1/charts/feeder-profile.svg",
            get(crate::api_feeder::get_feeder_profile),
        )
        .route(
            "/v1/charts/prices.svg",
            get(crate::api_dashboard::get_prices_chart),
        )
        .route(
            "/v1/charts/depth.svg",
            get(crate::api_dashboard::get_depth_chart),
        )
        .route("/v1/auth/challenge", post(crate::api_home::post_challenge))
        .route("/v1/auth/session", post(crate::api_home::post_session))
        .route("/v1/homes/{address}", get(crate::api_home::get_home))
        .route(
            "/v1/homes/{address}/flows.svg",
            get(crate::api_home::get_home_chart),
        )
        .route(
            "/v1/homes/{address}/plan.svg",
            get(crate::api_home::get_plan_chart),
        )
        .route(
            "/v1/homes/{address}/money.svg",
            get(crate::api_home::get_money_chart),
        )
        .route(
            "/v1/homes/{address}/grants",
            get(crate::api_home::get_grants),
        )
        .route(
            "/v1/homes/{address}/grants/{grantee}",
            axum::routing::put(crate::api_home::put_grant).delete(crate::api_home::delete_grant),
        )
        .merge(crate::dashboard::routes())
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        // Its own fallback, so an unknown path is JSON too once the VTN's routes are merged in.
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found(format!("no such path: {}", uri.path()))
        })
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            record_latency,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(guard_writes))
        .layer(axum::middleware::from_fn(time_limit))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(shared.clone())
        // The OpenADR VTN: its own limits, auth and error format (problem details).
        .merge(crate::openadr::router(shared))
}

/// Times each request of a matched route for `/metrics`.
async fn record_latency(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    s.latency.record(&route, started.elapsed());
    res
}

/// Paths only a client on this machine may change (the PCC meter's gateway).
const LOOPBACK_ONLY_WRITES: &[&str] = &["/v1/grid/pcc"];

/// Longest a handler may take (see `serve` for the bounds on connections).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Ends a request whose handler takes longer than [`REQUEST_TIMEOUT`] with 503 `timeout` (an
/// upgraded event stream lives on after its handler has answered 101).
async fn time_limit(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the node did not answer within {} s; try again",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

/// What a web page elsewhere cannot make a browser do to this node (issue 19, finding 6):
/// - a state-changing request (POST, PUT, PATCH, DELETE) whose `Origin` names another origin than
///   the request's `Host` is refused (403 `cross_origin`): the node's own pages are same-origin,
///   and clients that are not browsers send no `Origin`;
/// - a body must be JSON (415 `unsupported_media_type`): `text/plain` and form bodies are what a
///   cross-origin page may send without asking the node first (a CORS preflight, which the node
///   never grants);
/// - the loopback-only writes also need a `Host` that names this machine (`localhost`, a loopback
///   address), so a page whose domain resolves to 127.0.0.1 (DNS rebinding) cannot reach them.
async fn guard_writes(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    let writes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !writes {
        return next.run(req).await;
    }
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.trim_end_matches('/'));
        if authority.is_none_or(|a| !a.eq_ignore_ascii_case(host)) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                format!(
                    "a page from {:?} may not change this node (it is served as {host:?})",
                    origin.to_str().unwrap_or("?")
                ),
            )
            .into_response();
        }
    }
    if LOOPBACK_ONLY_WRITES.contains(&req.uri().path()) && !names_this_machine(host) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this request must name this machine as its host (localhost, 127.0.0.1), not {host:?}"),
        )
        .into_response();
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > 0);
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if has_body && !json {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether a `Host` header names this machine: `localhost` or a loopback address, with any port.
fn names_this_machine(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Largest error text of axum's own that is carried into the JSON answer.
const MAX_REJECTION_TEXT_BYTES: usize = 4 * 1024;

/// Every error the API answers is an [`ErrorBody`], including those axum's extractors and router
/// make as plain text (a path segment that is no number, a malformed query or body, a wrong
/// content type, a body over the limit, an unknown route, a wrong method). Their text becomes the
/// message; the status stays, and so do headers such as `Allow`.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        _ if status.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// An API error: status code, stable code and message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "API request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> ApiError {
        let status = match &e {
            AdmissionError::Decode(_)
            | AdmissionError::Signature(_)
            | AdmissionError::WrongChainId { .. } => StatusCode::BAD_REQUEST,
            AdmissionError::Duplicate(_)
            | AdmissionError::NonceInUse(_)
            | AdmissionError::StaleNonce { .. } => StatusCode::CONFLICT,
            AdmissionError::NonceTooFar { .. } | AdmissionError::InsufficientFunds { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AdmissionError::SenderFull(_) | AdmissionError::TooManyGapped(..) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AdmissionError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;

/// Node and chain status.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = StatusResponse)))]
async fn status(State(s): State<Arc<Shared>>) -> ApiResult<StatusResponse> {
    let mempool_size = s.mempool.lock().expect("mempool lock").len();
    let chain = s.chain.read().expect("chain lock");
    let supply = chain.state().total_supply();
    // The node's own clock; a BFT node's is the wall clock with blocks within 30 s; a driven
    // node's (the demo's) blocks come when its simulator says, so its head is never late.
    let (now, stall_after_ms) = match (s.clock.get(), &s.outbox) {
        (Some(c), _) => (c.now_ms(), c.stall_after_ms()),
        (None, Some(_)) => (crate::openadr::wire::wall_ms(), 30_000),
        (None, None) => (chain.head().timestamp_ms, u64::MAX),
    };
    let head_age_ms = now.saturating_sub(chain.head().timestamp_ms);
    Ok(Json(StatusResponse {
        chain_id: chain.chain_id().to_string(),
        genesis_hash: chain.genesis_hash().to_string(),
        height: chain.head().height,
        head_hash: chain.head_hash().to_string(),
        state_root: chain.head().state_root.to_string(),
        timestamp_ms: chain.head().timestamp_ms,
        mempool_size,
        total_supply: supply.to_string(),
        total_supply_base: supply.0,
        node_address: s.node_address.to_string(),
        consensus: if s.outbox.is_some() { "bft" } else { "solo" }.to_string(),
        validators: s.validators,
        validator_set: s.validator_set.iter().map(Address::to_string).collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        head_age_ms,
        health: gridmesh_api::chain::health(mempool_size, head_age_ms, stall_after_ms).into(),
        oldest_block: chain.store().kept_from().map_err(ApiError::internal)?,
    }))
}

/// Submit a signed transaction.
#[utoipa::path(post, path = "/v1/tx", request_body = SubmitRequest,
    responses(
        (status = 202, body = SubmitResponse, description = "accepted into the mempool"),
        (status = 400, body = ErrorBody, description = "malformed, badly signed or for another chain"),
        (status = 409, body = ErrorBody, description = "duplicate or replayed (stale nonce)"),
        (status = 422, body = ErrorBody, description = "insufficient funds or nonce too far ahead"),
        (status = 429, body = ErrorBody, description = "too many pending transactions from this sender"),
        (status = 503, body = ErrorBody, description = "mempool full"),
    ))]
async fn submit_tx(
    State(s): State<Arc<Shared>>,
    body: Bytes,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let req: SubmitRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected JSON {{\"tx\": \"<hex>\"}}: {e}"),
        )
    })?;
    let bytes = hex::decode(req.tx.trim()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_tx",
            format!("tx is not hex: {e}"),
        )
    })?;
    let hash = admit(&s, [decode_and_verify(&bytes)])
        .pop()
        .expect("one result per transaction")?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SubmitResponse {
            hash: hash.to_string(),
            status: "pending".into(),
        }),
    ))
}

/// Admits checked transactions to the mempool, one result each. Holds the chain's read lock
/// throughout, so no block is applied between reading a sender's account and inserting (a stale
/// nonce would otherwise slip in). Lock order everywhere: chain, then mempool.
fn admit(
    s: &Shared,
    txs: impl IntoIterator<Item = Result<VerifiedTx, AdmissionError>>,
) -> Vec<Result<Hash32, AdmissionError>> {
    let chain = s.chain.read().expect("chain lock");
    let mut mempool = s.mempool.lock().expect("mempool lock");
    let mut admitted = Vec::new();
    let results = txs
        .into_iter()
        .map(|r| {
            r.and_then(|tx| {
                let account = chain.account(&tx.sender());
                let a = mempool.insert(tx, account)?;
                if s.outbox.is_some() {
                    admitted.extend(a.ready.into_iter().map(VerifiedTx::into_tx));
                }
                Ok(a.hash)
            })
        })
        .collect();
    drop(mempool);
    drop(chain);
    if let Some(outbox) = &s.outbox {
        // Gossip to the other validators; if the outbox is full the transaction still waits
        // here for this validator's next proposal.
        outbox.push(&admitted);
    }
    results
}

/// Submit up to 1,000 signed transactions at once (gateways, aggregators). Signatures are checked
/// with batch verification over all cores; each transaction is admitted or refused on its own.
#[utoipa::path(post, path = "/v1/txs", request_body = BatchRequest,
    responses(
        (status = 200, body = BatchResponse, description = "one result per transaction"),
        (status = 400, body = ErrorBody, description = "not a batch, or more than 1,000 transactions"),
    ))]
async fn submit_txs(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult<BatchResponse> {
    let req: BatchRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected JSON {{\"txs\": [\"<hex>\", ...]}}: {e}"),
        )
    })?;
    if req.txs.len() > MAX_BATCH_TXS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "batch_too_large",
            format!(
                "{} transactions in one batch, at most {MAX_BATCH_TXS}",
                req.txs.len()
            ),
        ));
    }
    let checked = tokio::task::spawn_blocking(move || {
        let bytes: Vec<Result<Vec<u8>, AdmissionError>> = req
            .txs
            .iter()
            .map(|h| {
                hex::decode(h.trim()).map_err(|e| {
                    AdmissionError::Decode(gridmesh_ledger::tx::DecodeError::Malformed(format!(
                        "not hex: {e}"
                    )))
                })
            })
            .collect();
        let inputs: Vec<&[u8]> = bytes
            .iter()
            .filter_map(|b| b.as_ref().ok().map(Vec::as_slice))
            .collect();
        let mut verified = decode_and_verify_batch(&inputs, Parallelism::AllCores).into_iter();
        bytes
            .into_iter()
            .map(|b| b.and_then(|_| verified.next().expect("one result per decodable input")))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(ApiError::internal)?;
    let results: Vec<BatchItem> = admit(&s, checked)
        .into_iter()
        .map(|r| match r {
            Ok(hash) => BatchItem {
                hash: Some(hash.to_string()),
                status: Some("pending".into()),
                error: None,
                message: None,
            },
            Err(e) => BatchItem {
                hash: None,
                status: None,
                error: Some(e.code().into()),
                message: Some(e.to_string()),
            },
        })
        .collect();
    let accepted = results.iter().filter(|r| r.hash.is_some()).count();
    Ok(Json(BatchResponse {
        accepted,
        rejected: results.len() - accepted,
        results,
    }))
}

fn parse<T: std::str::FromStr>(s: &str, what: &'static str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{what}: {e}"),
        )
    })
}

/// An account's committed balance and next nonce, and whether the chain knows the address.
#[utoipa::path(get, path = "/v1/accounts/{address}",
    params(("address" = String, Path, description = "64 hex characters, or the checksummed `gm1…` form")),
    responses((status = 200, body = AccountResponse), (status = 400, body = ErrorBody)))]
async fn get_account(
    State(s): State<Arc<Shared>>,
    Path(address): Path<String>,
) -> ApiResult<AccountResponse> {
    let address: Address = parse(&address, "address")?;
    let (acc, device) = {
        let chain = s.chain.read().expect("chain lock");
        (
            chain.account(&address),
            chain.state().device(&address).is_some(),
        )
    };
    Ok(Json(AccountResponse {
        address: address.to_string(),
        checksummed: address.checksummed(),
        known: acc.nonce > 0 || acc.balance.0 > 0 || device,
        balance: acc.balance.to_string(),
        balance_base: acc.balance.0,
        nonce: acc.nonce,
    }))
}

fn pending_view(s: &Shared, address: &Address) -> gridmesh_api::chain::PendingView {
    use gridmesh_api::chain::{PendingTx, PendingView};
    // Lock order: chain, then mempool.
    let chain = s.chain.read().expect("chain lock");
    let next_nonce = chain.account(address).nonce;
    let p = s.mempool.lock().expect("mempool lock").pending_of(address);
    drop(chain);
    let list = |v: Vec<(u64, Hash32)>| {
        v.into_iter()
            .map(|(nonce, hash)| PendingTx {
                nonce,
                hash: hash.to_string(),
            })
            .collect()
    };
    PendingView {
        address: address.to_string(),
        next_nonce,
        ready: list(p.ready),
        gapped: list(p.gapped),
    }
}

/// An account's transactions waiting in this node's mempool: ready, and gapped (behind a
/// missing nonce).
#[utoipa::path(get, path = "/v1/accounts/{address}/pending",
    params(("address" = String, Path, description = "64 hex characters, or the checksummed `gm1…` form")),
    responses((status = 200, body = gridmesh_api::chain::PendingView), (status = 400, body = ErrorBody)))]
async fn get_pending(
    State(s): State<Arc<Shared>>,
    Path(address): Path<String>,
) -> ApiResult<gridmesh_api::chain::PendingView> {
    let address: Address = parse(&address, "address")?;
    Ok(Json(pending_view(&s, &address)))
}

#[derive(Deserialize)]
struct DropQuery {
    from_nonce: Option<u64>,
}

/// Drops the account's transactions waiting behind a missing nonce (from `from_nonce` up, else
/// all of them), releasing their deposits; signed in as the account (`/v1/auth/session`).
/// Ready transactions stay: they may be in a block already.
#[utoipa::path(delete, path = "/v1/accounts/{address}/pending",
    params(("address" = String, Path, description = "64 hex characters, or the checksummed `gm1…` form"),
        ("from_nonce" = Option<u64>, Query, description = "drop gapped transactions from this nonce up")),
    responses((status = 200, body = gridmesh_api::chain::DroppedView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn delete_pending(
    State(s): State<Arc<Shared>>,
    Path(address): Path<String>,
    Query(q): Query<DropQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<gridmesh_api::chain::DroppedView> {
    let address: Address = parse(&address, "address")?;
    if s.auth.session(&headers)? != address {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the account itself drops its pending transactions: sign in with its key",
        ));
    }
    let dropped = s
        .mempool
        .lock()
        .expect("mempool lock")
        .drop_gapped(&address, q.from_nonce.unwrap_or(0));
    tracing::info!(%address, dropped = dropped.len(), "pending transactions dropped by their sender");
    Ok(Json(gridmesh_api::chain::DroppedView {
        dropped: dropped
            .into_iter()
            .map(|(nonce, hash)| gridmesh_api::chain::PendingTx {
                nonce,
                hash: hash.to_string(),
            })
            .collect(),
        pending: pending_view(&s, &address),
    }))
}

/// 410 Gone for a block this node pruned (it keeps a window of the last blocks).
fn pruned(store: &gridmesh_ledger::store::Store, height: u64) -> Result<(), ApiError> {
    let kept_from = store.kept_from().map_err(ApiError::internal)?;
    if height == 0 || height >= kept_from {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::GONE,
        "pruned",
        format!(
            "block {height} was pruned: this node keeps the last blocks only, from {kept_from} on \
             (keep_blocks); ask a node that keeps every block"
        ),
    ))
}

/// A committed block with its transactions and receipts (`latest` for the head).
#[utoipa::path(get, path = "/v1/blocks/{height}",
    params(("height" = String, Path, description = "block height, or `latest`")),
    responses((status = 200, body = BlockResponse), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
        (status = 410, body = ErrorBody, description = "pruned: the node keeps a window of the last blocks")))]
async fn get_block(
    State(s): State<Arc<Shared>>,
    Path(height): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<BlockResponse> {
    let viewer = s.auth.viewer(&headers);
    let (store, head) = {
        let chain = s.chain.read().expect("chain lock");
        (chain.store().clone(), chain.head().height)
    };
    let height: u64 = if height == "latest" {
        head
    } else {
        parse(&height, "height")?
    };
    if height > head {
        return Err(ApiError::not_found(format!(
            "no block at height {height} (head is {head})"
        )));
    }
    pruned(&store, height)?;
    let (block, receipts) = store
        .block_with_receipts(height)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))?;
    let mut view = BlockResponse::of(&block, &receipts);
    // Members' energy only to their own sessions (and whom they grant it).
    for (v, tx) in view.txs.iter_mut().zip(&block.txs) {
        if !viewer.sees(&tx.body.sender) {
            v.redact();
        }
    }
    Ok(Json(view))
}

/// The market's rules, the current slot and the next slot open for orders.
#[utoipa::path(get, path = "/v1/market",
    responses((status = 200, body = gridmesh_api::market::MarketInfo)))]
async fn get_market(State(s): State<Arc<Shared>>) -> ApiResult<gridmesh_api::market::MarketInfo> {
    // A state clone shares its buckets (O(buckets)); the view is built without holding the lock.
    let (state, now) = {
        let chain = s.chain.read().expect("chain lock");
        (chain.state().clone(), chain.head().timestamp_ms)
    };
    let next_block_ms = s.clock.get().map(crate::NodeClock::next_block_ms);
    Ok(Json(gridmesh_api::market::market_info(
        &state,
        now,
        next_block_ms,
    )))
}

#[derive(Deserialize)]
struct EnvelopeQuery {
    location: String,
}

/// A connection point's operating envelope for a slot (public: the grid operator's limits).
#[utoipa::path(get, path = "/v1/market/slots/{slot}/envelope",
    params(("slot" = u64, Path, description = "15-minute slot index since the Unix epoch"),
        ("location" = String, Query, description = "the connection's market area, e.g. street-1/home-4")),
    responses((status = 200, body = EnvelopeView), (status = 404, body = ErrorBody),
        (status = 400, body = ErrorBody)))]
async fn get_envelope(
    State(s): State<Arc<Shared>>,
    Path(slot): Path<u64>,
    Query(q): Query<EnvelopeQuery>,
) -> ApiResult<EnvelopeView> {
    use gridmesh_ledger::readers::GridReader;
    let envelope = {
        let chain = s.chain.read().expect("chain lock");
        chain.state().envelope(slot, &q.location)
    };
    let e = envelope.ok_or_else(|| {
        ApiError::not_found(format!("no envelope for {:?} in slot {slot}", q.location))
    })?;
    Ok(Json(EnvelopeView {
        slot,
        location: e.location,
        import_kwh: gridmesh_types::units::format_kwh(e.import_mwh),
        export_kwh: gridmesh_types::units::format_kwh(e.export_mwh),
    }))
}

/// One delivery slot: order book depth, clearing price, volume, welfare; and the trades with
/// their settlement, the bill lines and the device readings of the members the caller may see (its
/// session's account and whom granted it theirs; none for the public).
#[utoipa::path(get, path = "/v1/market/slots/{slot}",
    params(("slot" = u64, Path, description = "15-minute slot index since the Unix epoch (unix ms / 900000)")),
    responses((status = 200, body = gridmesh_api::market::SlotView), (status = 404, body = ErrorBody),
        (status = 400, body = ErrorBody)))]
async fn get_market_slot(
    State(s): State<Arc<Shared>>,
    Path(slot): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<gridmesh_api::market::SlotView> {
    let slot: u64 = parse(&slot, "slot")?;
    let viewer = s.auth.viewer(&headers);
    let (state, now) = {
        let chain = s.chain.read().expect("chain lock");
        (chain.state().clone(), chain.head().timestamp_ms)
    };
    let mut view = gridmesh_api::market::slot_view(&state, slot, now)
        .ok_or_else(|| ApiError::not_found(format!("slot {slot} has no orders")))?;
    view.only_for(|a| viewer.sees_text(a));
    Ok(Json(view))
}

/// A transaction by hash: committed (with its receipt) or pending.
#[utoipa::path(get, path = "/v1/tx/{hash}",
    params(("hash" = String, Path, description = "64 hex characters")),
    responses((status = 200, body = TxStatusResponse), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "a block could not apply it (the reason, e.g. gate closed, is in the message)"),
        (status = 410, body = ErrorBody, description = "committed in a block the node pruned")))]
async fn get_tx(
    State(s): State<Arc<Shared>>,
    Path(hash): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<TxStatusResponse> {
    let hash: Hash32 = parse(&hash, "transaction hash")?;
    let viewer = s.auth.viewer(&headers);
    // A member's energy only to its sender's session (and whom the sender grants it).
    let view = |tx: &gridmesh_ledger::SignedTx| {
        let mut v = TxView::of(tx);
        if !viewer.sees(&tx.body.sender) {
            v.redact();
        }
        v
    };
    // The mempool first: a transaction leaves it only after its block is applied and indexed
    // (`gridmesh_consensus`), so one that is not pending now is found committed below if it is.
    // Read the other way round, a block committed between the two reads hid it from both.
    let pending = s
        .mempool
        .lock()
        .expect("mempool lock")
        .get(&hash)
        .map(|tx| view(tx.tx()));
    if let Some(tx) = pending {
        return Ok(Json(TxStatusResponse {
            hash: hash.to_string(),
            status: "pending".into(),
            height: None,
            index: None,
            block_hash: None,
            tx,
            receipt: None,
        }));
    }
    let (store, head) = {
        let chain = s.chain.read().expect("chain lock");
        (chain.store().clone(), chain.head().height)
    };
    // A block is visible from its commit in memory on, never while it is still being applied.
    if let Some(loc) = store
        .tx_location(&hash)
        .map_err(ApiError::internal)?
        .filter(|l| l.height <= head)
    {
        pruned(&store, loc.height).map_err(|e| ApiError {
            message: format!("transaction {hash}: {}", e.message),
            ..e
        })?;
        let (tx, receipt) = store
            .tx_at(loc)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(format!("indexed transaction {hash} missing")))?;
        let block_hash = store
            .header(loc.height)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(format!("block {} missing", loc.height)))?
            .hash();
        return Ok(Json(TxStatusResponse {
            hash: hash.to_string(),
            status: "committed".into(),
            height: Some(loc.height),
            index: Some(loc.index),
            block_hash: Some(block_hash.to_string()),
            tx: view(&tx),
            receipt: Some(ReceiptView::of(&receipt)),
        }));
    }
    let mp = s.mempool.lock().expect("mempool lock");
    if let Some(why) = mp.rejection(&hash) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rejected",
            format!("transaction {hash} was rejected: {why}"),
        ));
    }
    Err(ApiError::not_found(format!(
        "transaction {hash} is neither committed nor pending"
    )))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Prometheus text exposition of a few node gauges and counters.
async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let mempool = s.mempool.lock().expect("mempool lock").len();
    let height = s.chain.read().expect("chain lock").head().height;
    let committed = s.committed_txs.load(Ordering::Relaxed);
    let mut body = format!(
        "# HELP gridmesh_block_height Height of the last committed block.\n\
         # TYPE gridmesh_block_height gauge\ngridmesh_block_height {height}\n\
         # HELP gridmesh_mempool_txs Transactions waiting in the mempool.\n\
         # TYPE gridmesh_mempool_txs gauge\ngridmesh_mempool_txs {mempool}\n\
         # HELP gridmesh_committed_txs_total Transactions committed since the node started.\n\
         # TYPE gridmesh_committed_txs_total counter\ngridmesh_committed_txs_total {committed}\n"
    );
    if let Some(r) = &s.replica {
        let st = &r.stats;
        for (name, help, v) in [
            ("proposed", "Blocks this validator proposed.", &st.proposed),
            (
                "verified",
                "Proposals this validator verified and voted for.",
                &st.verified,
            ),
            (
                "rejected",
                "Proposals it voted against as invalid.",
                &st.rejected,
            ),
            (
                "stale",
                "Proposals it voted against because their parent was overtaken.",
                &st.stale,
            ),
            (
                "finalized",
                "Finalised blocks this node applied.",
                &st.finalized,
            ),
        ] {
            body.push_str(&format!(
                "# HELP gridmesh_bft_{name}_total {help}\n# TYPE gridmesh_bft_{name}_total counter\ngridmesh_bft_{name}_total {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        body.push_str(&format!(
            "# HELP gridmesh_bft_peers_connected Peers (validators, full nodes) this node is connected to.\n\
             # TYPE gridmesh_bft_peers_connected gauge\ngridmesh_bft_peers_connected {}\n",
            st.peers_connected.load(Ordering::Relaxed)
        ));
    }
    let head_age_s = {
        let head_ms = s.chain.read().expect("chain lock").head().timestamp_ms;
        let now = s
            .clock
            .get()
            .map_or_else(crate::openadr::wire::wall_ms, crate::NodeClock::now_ms);
        now.saturating_sub(head_ms) as f64 / 1_000.0
    };
    body.push_str(&format!(
        "# HELP gridmesh_head_age_seconds Age of the head block by the node's clock: how far finalisation lags.
         # TYPE gridmesh_head_age_seconds gauge
gridmesh_head_age_seconds {head_age_s}
         # HELP gridmesh_validators Validators of the chain (1 for solo).
         # TYPE gridmesh_validators gauge
gridmesh_validators {}
",
        s.validators
    ));
    if let Some(g) = s.gateway.get() {
        let st = g.stats.lock().expect("gateway stats lock").clone();
        body.push_str(&format!(
            "# HELP gridmesh_gateway_connected Whether the device gateway is connected to its broker.
             # TYPE gridmesh_gateway_connected gauge
gridmesh_gateway_connected {}
             # HELP gridmesh_gateway_payloads_total MQTT payloads received.
             # TYPE gridmesh_gateway_payloads_total counter
gridmesh_gateway_payloads_total {}
             # HELP gridmesh_gateway_samples_accepted_total Telemetry samples verified and stored.
             # TYPE gridmesh_gateway_samples_accepted_total counter
gridmesh_gateway_samples_accepted_total {}
             # HELP gridmesh_gateway_readings_relayed_total Device readings relayed onto the ledger.
             # TYPE gridmesh_gateway_readings_relayed_total counter
gridmesh_gateway_readings_relayed_total {}
",
            u8::from(st.connected),
            st.payloads,
            st.samples.accepted,
            st.readings_relayed
        ));
        body.push_str(
            "# HELP gridmesh_gateway_samples_rejected_total Telemetry samples refused, by reason.
# TYPE gridmesh_gateway_samples_rejected_total counter
",
        );
        for (reason, n) in &st.samples.rejected {
            // As /v1/gateway names them.
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{reason:?}"));
            body.push_str(&format!(
                "gridmesh_gateway_samples_rejected_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
        body.push_str(
            "# HELP gridmesh_gateway_dropped_total MQTT messages dropped before ingest, by reason.
# TYPE gridmesh_gateway_dropped_total counter
",
        );
        for (reason, n) in &st.dropped {
            body.push_str(&format!(
                "gridmesh_gateway_dropped_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
    }
    s.latency.render(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The microgrid: grid-connected or islanded, its transitions, and this node's grid operator
/// service (envelopes submitted) if it runs one.
#[utoipa::path(get, path = "/v1/grid", responses((status = 200, body = GridView)))]
async fn get_grid(State(s): State<Arc<Shared>>) -> ApiResult<GridView> {
    use gridmesh_ledger::readers::GridReader;
    let state = s.chain.read().expect("chain lock").state().clone();
    let mode = state.grid_mode();
    let first = mode.events.saturating_sub(100);
    let events = (first..mode.events)
        .filter_map(|seq| {
            state.grid_event(seq).map(|r| GridEventView {
                seq,
                event: event_name(r.event).into(),
                at_ms: r.at_ms,
                height: r.height,
            })
        })
        .collect();
    let operator = s.grid.as_ref().map(|g| {
        let st = g.status.lock().expect("status lock").clone();
        OperatorView {
            feeder: g.feeder_name.clone(),
            connection_points: g.connection_points,
            enveloped_slots: st.enveloped_slots.into_iter().collect(),
            envelopes_submitted: st.envelopes_submitted,
            transitions_submitted: st.transitions_submitted,
            last_error: st.last_error,
        }
    });
    let upstream = s
        .grid
        .as_ref()
        .and_then(|g| g.upstream.as_ref())
        .map(|u| u.lock().expect("upstream lock").status.clone());
    Ok(Json(GridView {
        mode: match mode.last {
            None | Some(gridmesh_ledger::GridEventKind::Reconnected) => "grid-connected",
            Some(e) => e.name(),
        }
        .into(),
        since_ms: mode.since_ms,
        events,
        events_total: mode.events,
        operator,
        upstream,
    }))
}

/// The PCC meter's gateway reports the upstream grid (loopback clients only), signed by the PCC
/// meter's device key (an active meter the grid operator registered) or the grid operator's key,
/// each report newer than the last accepted and within a minute of this node's clock: the grid
/// operator service islands the microgrid on an outage report, or when reports stop for its
/// timeout.
#[utoipa::path(post, path = "/v1/grid/pcc", request_body = PccReport,
    responses((status = 202, description = "accepted"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "the signature does not verify"),
        (status = 403, body = ErrorBody, description = "not from this machine, or not signed by the PCC meter or the grid operator"),
        (status = 409, body = ErrorBody, description = "no grid operator service, a replayed report, or one too far from the node's clock")))]
async fn post_pcc(
    State(s): State<Arc<Shared>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "PCC reports are accepted from this machine only (the meter's gateway)",
        ));
    }
    let Some(g) = &s.grid else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_grid_operator",
            "this node runs no grid operator service (start it with --grid-feeder and --grid-operator-key)",
        ));
    };
    let report: PccReport = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "expected JSON {{\"grid_available\": true|false, \"timestamp_ms\", \"signer\", \"signature\"}} \
                 signed by the PCC meter's or the grid operator's key (`gridmesh grid pcc`): {e}"
            ),
        )
    })?;
    let signer: Address = report.signer.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("signer: {e}"),
        )
    })?;
    let signature: [u8; 64] = hex::decode(&report.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "signature: expected 128 hex characters",
            )
        })?;
    let (chain_id, authorised) = {
        let chain = s.chain.read().expect("chain lock");
        let operator =
            gridmesh_ledger::readers::MarketReader::market_config(chain.state()).grid_operator;
        let authorised = signer == operator
            || chain.state().device(&signer).is_some_and(|d| {
                d.owner == operator
                    && d.info.kind == gridmesh_ledger::DeviceKind::Meter
                    && d.status == DeviceStatus::Active
            });
        (chain.chain_id().to_string(), authorised)
    };
    let message = gridmesh_api::chain::pcc_report_message(
        &chain_id,
        report.grid_available,
        report.timestamp_ms,
    );
    gridmesh_ledger::crypto::verify_one(&signer, &message, &signature).map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the report's signature does not verify for its signer, this chain and its contents",
        )
    })?;
    if !authorised {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_authorised",
            format!(
                "{signer} is neither the grid operator nor an active meter the grid operator registered"
            ),
        ));
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    g.pcc
        .lock()
        .expect("pcc lock")
        .report(report.grid_available, report.timestamp_ms, now_ms)
        .map_err(|e| {
            let code = match e {
                crate::grid_operator::PccRefusal::Replayed { .. } => "replayed",
                crate::grid_operator::PccRefusal::OutOfTime { .. } => "out_of_time",
            };
            ApiError::new(StatusCode::CONFLICT, code, e.to_string())
        })?;
    Ok(StatusCode::ACCEPTED)
}

/// A device registered with its own key: owner, description, bond, status.
#[utoipa::path(get, path = "/v1/devices/{address}",
    params(("address" = String, Path, description = "the device key, 64 hex characters")),
    responses((status = 200, body = DeviceView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_device(
    State(s): State<Arc<Shared>>,
    Path(address): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<DeviceView> {
    let viewer = s.auth.viewer(&headers);
    let device: Address = address.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_address",
            format!("{address:?} is not a device key: {e}"),
        )
    })?;
    let identity = {
        let chain = s.chain.read().expect("chain lock");
        chain.state().device(&device)
    };
    let d = identity
        .ok_or_else(|| ApiError::not_found(format!("device {device} is not registered")))?;
    Ok(Json(DeviceView {
        device: device.to_string(),
        owner: d.owner.to_string(),
        kind: d.info.kind.name().into(),
        capacity_w: d.info.capacity_w,
        location: d.info.location,
        latitude_deg: f64::from(d.info.latitude_microdeg) / 1e6,
        longitude_deg: f64::from(d.info.longitude_microdeg) / 1e6,
        tilt_deg: d.info.tilt_deg,
        azimuth_deg: d.info.azimuth_deg,
        bond: Amount(d.bond).to_string(),
        status: match d.status {
            DeviceStatus::Active => "active",
            DeviceStatus::Decommissioned => "decommissioned",
            DeviceStatus::Slashed => "slashed",
        }
        .into(),
        registered_height: d.registered_height,
        // The register's steps are the device's energy per slot: its owner's.
        register_kwh: d
            .register_mwh
            .filter(|_| viewer.sees(&d.owner))
            .map(gridmesh_types::units::format_kwh),
    }))
}
