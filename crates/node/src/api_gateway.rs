//! API of the device gateway: its counters, and the telemetry behind a slot reading (commitment
//! and inclusion proofs), which only this machine may read: it is a home's consumption profile.

use crate::api::{ApiError, ApiResult, ErrorBody};
use crate::Shared;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use gridmesh_types::units::{format_kwh, slot_start_ms, SLOT_MS};
use gridmesh_types::Address;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::ToSchema;

/// The device gateway: broker, connection, samples accepted and refused by reason, readings
/// relayed to the ledger.
#[derive(Serialize, ToSchema)]
pub struct GatewayView {
    pub broker: String,
    #[schema(value_type = Object)]
    pub stats: serde_json::Value,
}

/// What a device's telemetry of one slot commits to (a reading must state the same).
#[derive(Serialize, ToSchema)]
pub struct CommitmentView {
    pub device: String,
    pub slot: u64,
    pub samples: u32,
    /// Merkle root over the samples (hex).
    pub root: String,
    pub first_out_register_kwh: Option<String>,
    pub last_out_register_kwh: Option<String>,
}

/// One sample with its inclusion proof.
#[derive(Serialize, ToSchema)]
pub struct ProofView {
    pub device: String,
    pub slot: u64,
    pub index: u32,
    pub seq: u64,
    pub time_ms: u64,
    pub out_register_mwh: u64,
    pub in_register_mwh: u64,
    pub power_w: i32,
    /// Borsh encoding of the proof (sample, index, path), hex: evidence for `tx report-fraud`.
    pub proof_hex: String,
}

fn gateway(s: &Shared) -> Result<&crate::device_gateway::GatewayHandles, ApiError> {
    s.gateway.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_gateway",
            "this node runs no device gateway (start it with --mqtt HOST:PORT --gateway-key FILE)",
        )
    })
}

fn local_only(peer: &SocketAddr) -> Result<(), ApiError> {
    if peer.ip().is_loopback() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "raw telemetry is served to this machine only (it is a home's profile)",
        ))
    }
}

fn device(address: &str) -> Result<Address, ApiError> {
    address.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_address",
            format!("{address:?} is not a device key: {e}"),
        )
    })
}

/// The device gateway's counters.
#[utoipa::path(get, path = "/v1/gateway",
    responses((status = 200, body = GatewayView), (status = 409, body = ErrorBody)))]
pub async fn get_gateway(State(s): State<Arc<Shared>>) -> ApiResult<GatewayView> {
    let g = gateway(&s)?;
    let stats = g.stats.lock().expect("stats lock").clone();
    Ok(Json(GatewayView {
        broker: g.broker.clone(),
        stats: serde_json::to_value(stats).map_err(ApiError::internal)?,
    }))
}

/// The commitment of a device's stored telemetry for a slot (this machine only).
#[utoipa::path(get, path = "/v1/telemetry/{device}/{slot}",
    params(("device" = String, Path, description = "the device's key, 64 hex characters"),
        ("slot" = u64, Path, description = "15-minute slot index since the Unix epoch")),
    responses((status = 200, body = CommitmentView), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn get_commitment(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((address, slot)): Path<(String, u64)>,
) -> ApiResult<CommitmentView> {
    local_only(&peer)?;
    let (g, d) = (gateway(&s)?, device(&address)?);
    let start = slot_start_ms(slot);
    let c = g
        .store
        .commitment(&d, start, start + SLOT_MS)
        .map_err(ApiError::internal)?;
    Ok(Json(CommitmentView {
        device: d.to_string(),
        slot,
        samples: c.count,
        root: c.root.to_string(),
        first_out_register_kwh: c.first_out_register_mwh.map(format_kwh),
        last_out_register_kwh: c.last_out_register_mwh.map(format_kwh),
    }))
}

/// Sample `index` of a device's telemetry for a slot, with its inclusion proof (this machine
/// only).
#[utoipa::path(get, path = "/v1/telemetry/{device}/{slot}/proof/{index}",
    params(("device" = String, Path, description = "the device's key, 64 hex characters"),
        ("slot" = u64, Path, description = "15-minute slot index since the Unix epoch"),
        ("index" = u32, Path, description = "the sample's position in the slot, 0 = first")),
    responses((status = 200, body = ProofView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn get_proof(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((address, slot, index)): Path<(String, u64, u32)>,
) -> ApiResult<ProofView> {
    local_only(&peer)?;
    let (g, d) = (gateway(&s)?, device(&address)?);
    let start = slot_start_ms(slot);
    let p = g
        .store
        .proof(&d, start, start + SLOT_MS, index)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "device {d} has fewer than {} samples in slot {slot}",
                u64::from(index) + 1
            ))
        })?;
    Ok(Json(ProofView {
        device: d.to_string(),
        slot,
        index,
        seq: p.sample.seq,
        time_ms: p.sample.time_ms,
        out_register_mwh: p.sample.out_register_mwh,
        in_register_mwh: p.sample.in_register_mwh,
        power_w: p.sample.power_w,
        proof_hex: hex::encode(borsh::to_vec(&p).expect("a proof encodes")),
    }))
}
