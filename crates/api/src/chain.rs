//! The chain as the API shows it: status, submissions, accounts, transactions, blocks, devices
//! and the microgrid's state.

use gridmesh_ledger::{Block, Event, Receipt, SignedTx, TxKind};
use gridmesh_types::Amount;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most transactions in one `POST /v1/txs`.
pub const MAX_BATCH_TXS: usize = 1_000;

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `insufficient_funds`.
    pub error: String,
    pub message: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct StatusResponse {
    pub chain_id: String,
    pub genesis_hash: String,
    pub height: u64,
    pub head_hash: String,
    pub state_root: String,
    pub timestamp_ms: u64,
    pub mempool_size: usize,
    /// Total token supply, decimal tokens.
    pub total_supply: String,
    #[schema(value_type = u64)]
    pub total_supply_base: u128,
    pub node_address: String,
    /// `solo` (one node orders blocks) or `bft` (the genesis validators agree on every block).
    pub consensus: String,
    /// Number of validators (1 for solo).
    pub validators: usize,
    /// Their keys (solo: this node, the one proposer).
    pub validator_set: Vec<String>,
    /// The node's software version.
    #[serde(default)]
    pub version: String,
    /// How long ago, by the node's clock, the head block was made, ms.
    #[serde(default)]
    pub head_age_ms: u64,
    /// `ok`, or `stalled`: transactions wait and no block has come for ten block intervals (a
    /// solo engine that stopped, validators that cannot agree).
    #[serde(default)]
    pub health: String,
    /// The oldest block after genesis this node still holds: 1, unless it keeps only a window of
    /// the last blocks (`keep_blocks`) and older ones were pruned.
    #[serde(default)]
    pub oldest_block: u64,
}

/// The node's health from what it waits on: `stalled` when `pending` transactions wait and the
/// head is older than `stall_after_ms`.
pub fn health(pending: usize, head_age_ms: u64, stall_after_ms: u64) -> &'static str {
    if pending > 0 && head_age_ms > stall_after_ms {
        "stalled"
    } else {
        "ok"
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct SubmitRequest {
    /// The signed transaction's canonical encoding, hex.
    pub tx: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct SubmitResponse {
    pub hash: String,
    /// Always `pending`: the transaction waits in the mempool for the next block.
    pub status: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct BatchRequest {
    /// Signed transactions, canonical encodings in hex; at most 1,000.
    pub txs: Vec<String>,
}

/// The outcome for one transaction of a batch: `hash` and `status: "pending"`, or `error` and
/// `message` as in a single submission.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct BatchResponse {
    pub accepted: usize,
    pub rejected: usize,
    /// One item per submitted transaction, in order.
    pub results: Vec<BatchItem>,
}

/// One pending transaction of an account.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct PendingTx {
    pub nonce: u64,
    pub hash: String,
}

/// An account's transactions waiting in this node's mempool.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct PendingView {
    pub address: String,
    /// The nonce the account's next committed transaction must carry.
    pub next_nonce: u64,
    /// Those a block can take now (from `next_nonce` on without a hole), in nonce order.
    pub ready: Vec<PendingTx>,
    /// Those waiting behind a missing nonce, in nonce order: they run once the missing ones
    /// come, or expire; the account may drop them (`DELETE`).
    pub gapped: Vec<PendingTx>,
}

/// What `DELETE /v1/accounts/{address}/pending` dropped, and what still waits.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct DroppedView {
    pub dropped: Vec<PendingTx>,
    pub pending: PendingView,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct AccountResponse {
    /// 64 hex characters.
    pub address: String,
    /// The same address in its checksummed form for people (`gm1…`, bech32m).
    pub checksummed: String,
    /// Whether the chain has ever seen the address: it holds tokens, has sent a transaction, or
    /// is a device registered with its own key. A transfer to an unknown address is most likely
    /// a typo (the CLI asks for `--new-recipient`).
    pub known: bool,
    /// Balance in decimal tokens.
    pub balance: String,
    /// Balance in base units (1 token = 10^6).
    #[schema(value_type = u64)]
    pub balance_base: u128,
    /// The nonce the account's next transaction must carry.
    pub nonce: u64,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct TxView {
    pub hash: String,
    pub chain_id: String,
    pub sender: String,
    pub nonce: u64,
    /// Transaction kind, e.g. `transfer`.
    pub kind: String,
    pub to: Option<String>,
    /// Amount in decimal tokens.
    pub amount: Option<String>,
    #[schema(value_type = Option<u64>)]
    pub amount_base: Option<u128>,
    /// The fields of market and device transactions (energy in mWh, prices in base units per kWh).
    #[schema(value_type = Option<Object>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// The details are a member's energy (its meter or devices' readings, its orders) and are
    /// shown only to the member's session and whom it grants them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

impl TxView {
    /// Whether the details carry a member's energy: orders, meter and device readings.
    pub fn carries_member_energy(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "place_order" | "submit_reading" | "submit_device_readings"
        )
    }

    /// Drops a member's energy from the view, for a reader who may not see it.
    pub fn redact(&mut self) {
        if self.carries_member_energy() {
            self.details = None;
            self.private = true;
        }
    }

    pub fn of(tx: &SignedTx) -> TxView {
        let b = &tx.body;
        let (kind, to, amount, details) = match &b.kind {
            TxKind::Transfer { to, amount } => ("transfer", Some(*to), Some(*amount), None),
            TxKind::RegisterDevice { kind, capacity_w } => (
                "register_device",
                None,
                None,
                Some(serde_json::json!({"device_kind": kind.name(), "capacity_w": capacity_w})),
            ),
            TxKind::PlaceOrder {
                slot,
                side,
                energy_mwh,
                price_per_kwh,
                location,
            } => (
                "place_order",
                None,
                None,
                Some(
                    serde_json::json!({"slot": slot, "side": side, "energy_mwh": energy_mwh,
                    "price_per_kwh": price_per_kwh, "location": location}),
                ),
            ),
            TxKind::CancelOrder { slot, order_id } => (
                "cancel_order",
                None,
                None,
                Some(serde_json::json!({"slot": slot, "order_id": order_id})),
            ),
            TxKind::SubmitReading {
                slot,
                import_mwh,
                export_mwh,
            } => (
                "submit_reading",
                None,
                None,
                Some(serde_json::json!({"slot": slot, "import_mwh": import_mwh,
                    "export_mwh": export_mwh})),
            ),
            TxKind::SetEnvelope {
                slot,
                location,
                import_mwh,
                export_mwh,
            } => (
                "set_envelope",
                None,
                None,
                Some(serde_json::json!({"slot": slot, "location": location,
                    "import_mwh": import_mwh, "export_mwh": export_mwh})),
            ),
            TxKind::GridEvent { event, at_ms } => (
                "grid_event",
                None,
                None,
                Some(serde_json::json!({"event": event, "at_ms": at_ms})),
            ),
            TxKind::RegisterDeviceKey {
                device, info, bond, ..
            } => (
                "register_device_key",
                None,
                Some(*bond),
                Some(serde_json::json!({"device": device.to_string(), "info": info})),
            ),
            TxKind::TransferDevice { device, to } => (
                "transfer_device",
                Some(*to),
                None,
                Some(serde_json::json!({"device": device.to_string()})),
            ),
            TxKind::DecommissionDevice { device } => (
                "decommission_device",
                None,
                None,
                Some(serde_json::json!({"device": device.to_string()})),
            ),
            TxKind::SubmitDeviceReadings { readings } => (
                "submit_device_readings",
                None,
                None,
                Some(serde_json::json!({ "readings": readings })),
            ),
            TxKind::ReportFraud {
                device,
                slot,
                evidence,
            } => (
                "report_fraud",
                None,
                None,
                Some(
                    serde_json::json!({"device": device.to_string(), "slot": slot,
                    "evidence": match evidence {
                        gridmesh_ledger::tx::FraudEvidence::Commitment(_) => "commitment",
                        gridmesh_ledger::tx::FraudEvidence::Physics => "physics",
                    }}),
                ),
            ),
            TxKind::DismissDispute { device, slot } => (
                "dismiss_dispute",
                None,
                None,
                Some(serde_json::json!({"device": device.to_string(), "slot": slot})),
            ),
            TxKind::RequestFlexibility {
                slot,
                area,
                direction,
                value_per_kwh,
            } => (
                "request_flexibility",
                None,
                None,
                Some(
                    serde_json::json!({"slot": slot, "area": area, "direction": direction,
                    "value_per_kwh": value_per_kwh}),
                ),
            ),
            TxKind::CreateAsset { name, holders } => (
                "create_asset",
                None,
                None,
                Some(serde_json::json!({"name": name, "holders": holders})),
            ),
            TxKind::TransferShares { asset, to, shares } => (
                "transfer_shares",
                Some(*to),
                None,
                Some(serde_json::json!({"asset": asset.to_string(), "shares": shares})),
            ),
            TxKind::SetTariff {
                slot,
                retail_per_kwh,
                feed_in_per_kwh,
            } => (
                "set_tariff",
                None,
                None,
                Some(
                    serde_json::json!({"slot": slot, "retail_per_kwh": retail_per_kwh,
                    "feed_in_per_kwh": feed_in_per_kwh}),
                ),
            ),
        };
        TxView {
            hash: tx.hash().to_string(),
            chain_id: b.chain_id.clone(),
            sender: b.sender.to_string(),
            nonce: b.nonce,
            kind: kind.into(),
            to: to.map(|a| a.to_string()),
            amount: amount.map(|a: Amount| a.to_string()),
            amount_base: amount.map(|a| a.0),
            details,
            private: false,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    /// Event type, e.g. `transfer`.
    #[serde(rename = "type")]
    pub kind: String,
    pub from: Option<String>,
    pub to: Option<String>,
    #[schema(value_type = Option<u64>)]
    pub amount_base: Option<u128>,
    #[schema(value_type = Option<Object>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ReceiptView {
    pub tx_hash: String,
    pub height: u64,
    pub index: u32,
    /// `ok`: every transaction in a committed block applied successfully.
    pub status: String,
    /// Effects the transaction does not state itself (none for a plain transfer).
    pub events: Vec<EventView>,
}

impl ReceiptView {
    pub fn of(r: &Receipt) -> ReceiptView {
        ReceiptView {
            tx_hash: r.tx_hash.to_string(),
            height: r.height,
            index: r.index,
            status: "ok".into(),
            events: r
                .events
                .iter()
                .map(|e| match e {
                    Event::Transfer { from, to, amount } => EventView {
                        kind: "transfer".into(),
                        from: Some(from.to_string()),
                        to: Some(to.to_string()),
                        amount_base: Some(amount.0),
                        details: None,
                    },
                    other => {
                        let v = serde_json::to_value(other).unwrap_or_default();
                        EventView {
                            kind: v["type"].as_str().unwrap_or("event").to_string(),
                            from: None,
                            to: None,
                            amount_base: None,
                            details: Some(v),
                        }
                    }
                })
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct BlockResponse {
    pub height: u64,
    pub hash: String,
    pub parent_hash: String,
    pub timestamp_ms: u64,
    pub tx_root: String,
    pub state_root: String,
    pub proposer: String,
    pub tx_count: u32,
    pub txs: Vec<TxView>,
    pub receipts: Vec<ReceiptView>,
}

impl BlockResponse {
    pub fn of(b: &Block, receipts: &[Receipt]) -> BlockResponse {
        let h = &b.header;
        BlockResponse {
            height: h.height,
            hash: b.hash().to_string(),
            parent_hash: h.parent_hash.to_string(),
            timestamp_ms: h.timestamp_ms,
            tx_root: h.tx_root.to_string(),
            state_root: h.state_root.to_string(),
            proposer: h.proposer.to_string(),
            tx_count: h.tx_count,
            txs: b.txs.iter().map(TxView::of).collect(),
            receipts: receipts.iter().map(ReceiptView::of).collect(),
        }
    }
}

/// The grid operator's operating envelope of one connection point for one slot.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeView {
    pub slot: u64,
    pub location: String,
    /// What the connection may import and export in the slot, kWh (orders beyond it are trimmed
    /// at clearing).
    pub import_kwh: String,
    pub export_kwh: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct TxStatusResponse {
    pub hash: String,
    /// `committed` (durably in a block) or `pending` (in the mempool).
    pub status: String,
    pub height: Option<u64>,
    pub index: Option<u32>,
    pub block_hash: Option<String>,
    pub tx: TxView,
    pub receipt: Option<ReceiptView>,
}

/// One recorded transition of the islanding controller.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct GridEventView {
    pub seq: u64,
    /// `islanded`, `resynchronising` or `reconnected`.
    pub event: String,
    pub at_ms: u64,
    pub height: u64,
}

/// The grid operator service of this node, if it runs one.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct OperatorView {
    pub feeder: String,
    pub connection_points: usize,
    /// Slots whose envelopes this node submitted (the most recent 1,000).
    pub enveloped_slots: Vec<u64>,
    pub envelopes_submitted: u64,
    pub transitions_submitted: u64,
    pub last_error: Option<String>,
}

/// The grid operator service following its DSO's OpenADR 3 VTN (`--openadr-upstream`).
#[derive(Serialize, Deserialize, ToSchema, Debug, Default, Clone)]
pub struct UpstreamView {
    /// The VTN's base URL.
    pub url: String,
    /// This node's VEN object at the VTN, once registered.
    pub ven_id: Option<String>,
    /// The programs followed.
    pub program_ids: Vec<String>,
    pub polls: u64,
    /// Events seen at the last poll.
    pub events: usize,
    /// Slots from now on with a capacity limit, and with a price.
    pub limited_slots: usize,
    pub priced_slots: usize,
    /// Usage reports sent back.
    pub reports_sent: u64,
    /// What the last poll left out of the events, one line each (at most 20).
    pub left_out: Vec<String>,
    pub last_error: Option<String>,
}

/// The microgrid's state on the ledger.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct GridView {
    /// `grid-connected`, `islanded` or `resynchronising`.
    pub mode: String,
    pub since_ms: u64,
    /// The latest transitions (up to 100), oldest first.
    pub events: Vec<GridEventView>,
    pub events_total: u64,
    pub operator: Option<OperatorView>,
    #[serde(default)]
    pub upstream: Option<UpstreamView>,
}

pub fn event_name(e: gridmesh_ledger::GridEventKind) -> &'static str {
    e.name()
}

/// A report of the PCC (feeder-head) meter, signed by the meter's device key (a meter the grid
/// operator registered with its own key) or by the grid operator's key.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct PccReport {
    /// Whether the upstream grid is there (voltage and frequency within their band).
    pub grid_available: bool,
    /// When the meter saw it (ms since the epoch): newer than the last accepted report, and
    /// within a minute of the node's clock.
    pub timestamp_ms: u64,
    /// The signing key, 64 hex characters.
    pub signer: String,
    /// The ed25519 signature of [`pcc_report_message`], 128 hex characters.
    pub signature: String,
}

/// What a PCC report's signer signs: a domain tag, the chain id, the availability and the time.
pub fn pcc_report_message(chain_id: &str, grid_available: bool, timestamp_ms: u64) -> Vec<u8> {
    let mut m = b"gridmesh/pcc-report/v1\0".to_vec();
    m.extend_from_slice(chain_id.as_bytes());
    m.push(0);
    m.push(u8::from(grid_available));
    m.extend_from_slice(&timestamp_ms.to_be_bytes());
    m
}

impl PccReport {
    /// A report signed by `key`.
    pub fn signed(
        key: &gridmesh_ledger::Keypair,
        chain_id: &str,
        grid_available: bool,
        timestamp_ms: u64,
    ) -> PccReport {
        let sig = key.sign(&pcc_report_message(chain_id, grid_available, timestamp_ms));
        PccReport {
            grid_available,
            timestamp_ms,
            signer: key.address().to_string(),
            signature: hex::encode(sig),
        }
    }
}

/// A device registered with its own key.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct DeviceView {
    pub device: String,
    pub owner: String,
    /// `pv`, `battery`, `ev-charger`, `load` or `meter`.
    pub kind: String,
    pub capacity_w: u32,
    pub location: String,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    pub tilt_deg: u8,
    pub azimuth_deg: u16,
    /// Tokens bonded (0 once decommissioned).
    pub bond: String,
    /// `active` or `decommissioned`.
    pub status: String,
    pub registered_height: u64,
    /// The register of its last checked reading, kWh.
    pub register_kwh: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_stalled_only_when_transactions_wait_past_the_limit() {
        assert_eq!(health(0, 1_000_000, 10_000), "ok");
        assert_eq!(health(3, 9_999, 10_000), "ok");
        assert_eq!(health(3, 10_001, 10_000), "stalled");
    }
}
