//! OpenADR 3.1's objects as this VTN writes and reads them, and how the community's state
//! becomes programs and events.
//!
//! Our own types rather than `openleadr-wire`'s: that crate builds sqlx (with its PostgreSQL,
//! MySQL and SQLite drivers), serde_with, validator and chrono into whatever uses it, about
//! 400 crates, for the dozen objects a VTN of this size needs.

use gridmesh_ledger::readers::{EconomicsReader, GridReader};
use gridmesh_ledger::tx::FlexDirection;
use gridmesh_types::units::{slot_of, slot_start_ms};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The programs, by id.
pub const PROGRAM_IDS: [&str; 3] = ["prices", "envelopes", "flexibility"];
/// An envelope event's id: this, then a hash of its connection.
pub const ENVELOPE_EVENT_PREFIX: &str = "envelope-";
/// Private payload types of the flexibility program: what a kWh of reduced or increased draw
/// earns, tokens per kWh (OpenADR 3 has none for a reward per kWh of flexibility).
pub const FLEX_REDUCE: &str = "GRIDMESH_FLEX_REDUCE_PRICE";
pub const FLEX_INCREASE: &str = "GRIDMESH_FLEX_INCREASE_PRICE";
/// The currency of prices: ISO 4217's code for no currency (the community's token is none).
pub const CURRENCY: &str = "XXX";
/// Longest string field accepted from a VEN.
const MAX_TEXT_CHARS: usize = 256;

pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 (UTC, seconds) of Unix milliseconds.
pub fn rfc3339(ms: u64) -> String {
    gridmesh_types::units::rfc3339(ms / 1_000)
}

pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadDescriptor {
    pub object_type: String,
    pub payload_type: String,
    pub units: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

fn descriptor(payload_type: &str, units: &str, currency: Option<&str>) -> PayloadDescriptor {
    PayloadDescriptor {
        object_type: "EVENT_PAYLOAD_DESCRIPTOR".into(),
        payload_type: payload_type.into(),
        units: units.into(),
        currency: currency.map(str::to_string),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntervalPeriod {
    pub start: String,
    pub duration: String,
}

/// One slot's interval period.
fn slot_period(slot: u64) -> IntervalPeriod {
    IntervalPeriod {
        start: rfc3339(slot_start_ms(slot)),
        duration: "PT15M".into(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValuesMap {
    #[serde(rename = "type")]
    pub kind: String,
    pub values: Vec<f64>,
}

fn values(kind: &str, v: f64) -> ValuesMap {
    ValuesMap {
        kind: kind.into(),
        values: vec![v],
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_period: Option<IntervalPeriod>,
    pub payloads: Vec<ValuesMap>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Program {
    pub id: String,
    pub created_date_time: String,
    pub modification_date_time: String,
    pub object_type: &'static str,
    pub program_name: String,
    pub program_long_name: String,
    pub payload_descriptors: Vec<PayloadDescriptor>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    pub created_date_time: String,
    pub modification_date_time: String,
    pub object_type: &'static str,
    #[serde(rename = "programID")]
    pub program_id: String,
    pub event_name: String,
    pub priority: u32,
    pub targets: Vec<String>,
    pub payload_descriptors: Vec<PayloadDescriptor>,
    pub interval_period: IntervalPeriod,
    pub intervals: Vec<Interval>,
}

/// The programs (their times: the head's slot, as everything here).
pub fn programs(now_ms: u64) -> Vec<Program> {
    let at = rfc3339(slot_start_ms(slot_of(now_ms)));
    let program = |id: &str, long: &str, d: Vec<PayloadDescriptor>| Program {
        id: id.into(),
        created_date_time: at.clone(),
        modification_date_time: at.clone(),
        object_type: "PROGRAM",
        program_name: format!("gridmesh-{id}"),
        program_long_name: long.into(),
        payload_descriptors: d,
    };
    vec![
        program(
            "prices",
            "The community's utility prices per 15-minute slot: buying (PRICE) and selling \
             (EXPORT_PRICE) a kWh, in community tokens",
            vec![
                descriptor("PRICE", "KWH", Some(CURRENCY)),
                descriptor("EXPORT_PRICE", "KWH", Some(CURRENCY)),
            ],
        ),
        program(
            "envelopes",
            "Each connection's operating envelope per 15-minute slot: the most it may import \
             and export, kW",
            vec![
                descriptor("IMPORT_CAPACITY_LIMIT", "KW", None),
                descriptor("EXPORT_CAPACITY_LIMIT", "KW", None),
            ],
        ),
        program(
            "flexibility",
            "The grid operator's flexibility requests: what a kWh of reduced or increased draw \
             earns per 15-minute slot in an area, in community tokens",
            vec![
                descriptor(FLEX_REDUCE, "KWH", Some(CURRENCY)),
                descriptor(FLEX_INCREASE, "KWH", Some(CURRENCY)),
            ],
        ),
    ]
}

fn short_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// The id of the envelope event of `connection`.
pub fn envelope_event_id(connection: &str) -> String {
    format!("{ENVELOPE_EVENT_PREFIX}{}", short_hash(connection))
}

/// Tokens of base units.
fn tokens(units: u64) -> f64 {
    units as f64 / 10f64.powi(gridmesh_types::TOKEN_DECIMALS as i32)
}

/// kW of an energy per slot, mWh.
fn kw_of_slot_mwh(mwh: u64) -> f64 {
    mwh as f64 * 4.0 / 1e6
}

/// The events at the head: prices, flexibility requests, and (for a VEN of `connection`) its
/// envelope, over the slot running and the [`super::HORIZON_SLOTS`] after it.
pub fn events(state: &gridmesh_ledger::State, now_ms: u64, connection: Option<&str>) -> Vec<Event> {
    let first = slot_of(now_ms);
    let slots = first..first + super::HORIZON_SLOTS;
    let at = rfc3339(slot_start_ms(first));
    let programs = programs(now_ms);
    let descriptors = |id: &str| {
        programs
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.payload_descriptors.clone())
            .unwrap_or_default()
    };
    let event = |id: String, program: &str, name: String, targets, intervals| Event {
        id,
        created_date_time: at.clone(),
        modification_date_time: at.clone(),
        object_type: "EVENT",
        program_id: program.into(),
        event_name: name,
        priority: 0,
        targets,
        payload_descriptors: descriptors(program),
        interval_period: slot_period(first),
        intervals,
    };
    let prices = slots
        .clone()
        .enumerate()
        .map(|(k, slot)| {
            let t = state.tariff(slot);
            Interval {
                id: k as u32,
                interval_period: None,
                payloads: vec![
                    values("PRICE", tokens(t.retail_per_kwh)),
                    values("EXPORT_PRICE", tokens(t.feed_in_per_kwh)),
                ],
            }
        })
        .collect();
    let mut out = vec![event(
        "prices".into(),
        "prices",
        "utility prices".into(),
        Vec::new(),
        prices,
    )];
    // Flexibility requests, one event per area ("" = everywhere).
    let mut by_area: std::collections::BTreeMap<String, Vec<Interval>> = Default::default();
    for slot in slots.clone() {
        for (area, r) in state.flex_requests(slot) {
            let list = by_area.entry(area).or_default();
            let kind = match r.direction {
                FlexDirection::Reduce => FLEX_REDUCE,
                FlexDirection::Increase => FLEX_INCREASE,
            };
            list.push(Interval {
                id: list.len() as u32,
                interval_period: Some(slot_period(slot)),
                payloads: vec![values(kind, tokens(r.value_per_kwh))],
            });
        }
    }
    for (area, intervals) in by_area {
        let name = if area.is_empty() {
            "flexibility requests everywhere".to_string()
        } else {
            format!("flexibility requests in {area}")
        };
        let targets = if area.is_empty() {
            Vec::new()
        } else {
            vec![area.clone()]
        };
        out.push(event(
            format!("flexibility-{}", short_hash(&area)),
            "flexibility",
            name,
            targets,
            intervals,
        ));
    }
    if let Some(c) = connection {
        let intervals: Vec<Interval> = slots
            .filter_map(|slot| Some((slot, state.envelope(slot, c)?)))
            .enumerate()
            .map(|(k, (slot, e))| Interval {
                id: k as u32,
                interval_period: Some(slot_period(slot)),
                payloads: vec![
                    values("IMPORT_CAPACITY_LIMIT", kw_of_slot_mwh(e.import_mwh)),
                    values("EXPORT_CAPACITY_LIMIT", kw_of_slot_mwh(e.export_mwh)),
                ],
            })
            .collect();
        if !intervals.is_empty() {
            out.push(event(
                envelope_event_id(c),
                "envelopes",
                format!("operating envelope of {c}"),
                vec![c.to_string()],
                intervals,
            ));
        }
    }
    out
}

/// A VEN's object as it reads it.
pub fn ven_object(v: &super::vens::Ven) -> Value {
    let at = rfc3339(v.created_ms);
    json!({
        "id": v.id,
        "createdDateTime": at,
        "modificationDateTime": at,
        "objectType": "VEN",
        "venName": v.name,
        "clientID": v.client_id,
        "targets": v.connection.iter().collect::<Vec<_>>(),
    })
}

fn text_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_TEXT_CHARS
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportInterval {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_period: Option<IntervalPeriod>,
    pub payloads: Vec<ReportPayload>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportPayload {
    #[serde(rename = "type")]
    pub kind: String,
    pub values: Vec<Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResource {
    pub resource_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_period: Option<IntervalPeriod>,
    pub intervals: Vec<ReportInterval>,
}

/// A report as a VEN sends it (the VTN's own fields are added on receipt).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportIn {
    #[serde(rename = "programID")]
    pub program_id: String,
    #[serde(rename = "eventID")]
    pub event_id: String,
    pub client_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_descriptors: Option<Vec<Value>>,
    pub resources: Vec<ReportResource>,
}

impl ReportIn {
    /// Bounds and shapes: at most 100 resources of 1,000 intervals, 20 payloads of 100 values
    /// each (numbers, strings or booleans), texts of 256 characters.
    pub fn check(&self) -> Result<(), String> {
        for (what, t) in [
            ("programID", &self.program_id),
            ("eventID", &self.event_id),
            ("clientName", &self.client_name),
        ] {
            if !text_ok(t) {
                return Err(format!("{what} must be 1 to {MAX_TEXT_CHARS} characters"));
            }
        }
        if self.report_name.as_deref().is_some_and(|n| !text_ok(n)) {
            return Err(format!(
                "reportName must be 1 to {MAX_TEXT_CHARS} characters"
            ));
        }
        if self
            .payload_descriptors
            .as_ref()
            .is_some_and(|d| d.len() > 20)
        {
            return Err("at most 20 payloadDescriptors".into());
        }
        if self.resources.is_empty() || self.resources.len() > 100 {
            return Err("a report has 1 to 100 resources".into());
        }
        for r in &self.resources {
            if !text_ok(&r.resource_name) {
                return Err(format!(
                    "resourceName must be 1 to {MAX_TEXT_CHARS} characters"
                ));
            }
            if r.intervals.len() > 1_000 {
                return Err(format!(
                    "resource {:?}: at most 1,000 intervals",
                    r.resource_name
                ));
            }
            for i in &r.intervals {
                if i.payloads.len() > 20 {
                    return Err(format!(
                        "resource {:?}: at most 20 payloads an interval",
                        r.resource_name
                    ));
                }
                for p in &i.payloads {
                    if !text_ok(&p.kind) || p.values.len() > 100 {
                        return Err(format!(
                            "resource {:?}: a payload has a type and at most 100 values",
                            r.resource_name
                        ));
                    }
                    if let Some(bad) = p.values.iter().find(|v| {
                        !(v.is_number() || v.is_boolean() || v.as_str().is_some_and(text_ok))
                    }) {
                        return Err(format!(
                            "resource {:?}: a {} value is {bad} (numbers, strings and booleans only)",
                            r.resource_name, p.kind
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectOperation {
    pub objects: Vec<String>,
    pub operations: Vec<String>,
    pub callback_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
}

/// A subscription as a VEN sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionIn {
    pub client_name: String,
    #[serde(rename = "programID")]
    pub program_id: String,
    pub object_operations: Vec<ObjectOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
}

impl SubscriptionIn {
    pub fn check(&self) -> Result<(), String> {
        if !text_ok(&self.client_name) {
            return Err(format!(
                "clientName must be 1 to {MAX_TEXT_CHARS} characters"
            ));
        }
        if self.object_operations.is_empty() || self.object_operations.len() > 10 {
            return Err("a subscription has 1 to 10 objectOperations".into());
        }
        for o in &self.object_operations {
            if o.objects.is_empty() || o.objects.iter().any(|x| !OBJECTS.contains(&x.as_str())) {
                return Err(format!(
                    "objects must be some of {OBJECTS:?}, not {:?}",
                    o.objects
                ));
            }
            if o.operations.is_empty()
                || o.operations
                    .iter()
                    .any(|x| !OPERATIONS.contains(&x.as_str()))
            {
                return Err(format!(
                    "operations must be some of {OPERATIONS:?}, not {:?}",
                    o.operations
                ));
            }
            let url_ok = o.callback_url.len() <= 2_048
                && (o.callback_url.starts_with("http://")
                    || o.callback_url.starts_with("https://"));
            if !url_ok {
                return Err(format!(
                    "callbackUrl must be an http(s) URL of at most 2,048 characters, not {:?}",
                    o.callback_url
                ));
            }
            if o.bearer_token.as_ref().is_some_and(|t| t.len() > 4_096) {
                return Err("bearerToken: at most 4,096 characters".into());
            }
        }
        Ok(())
    }

    /// The operation `op` on `object` is subscribed to: where to post it, with which token.
    pub fn wants(&self, object: &str, op: &str) -> Vec<(&str, Option<&str>)> {
        self.object_operations
            .iter()
            .filter(|o| {
                o.objects.iter().any(|x| x == object) && o.operations.iter().any(|x| x == op)
            })
            .map(|o| (o.callback_url.as_str(), o.bearer_token.as_deref()))
            .collect()
    }
}

const OBJECTS: [&str; 6] = [
    "PROGRAM",
    "EVENT",
    "REPORT",
    "SUBSCRIPTION",
    "VEN",
    "RESOURCE",
];
const OPERATIONS: [&str; 3] = ["POST", "PUT", "DELETE"];

/// A subscription as the VTN keeps and answers it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub created_date_time: String,
    pub modification_date_time: String,
    pub object_type: &'static str,
    #[serde(skip)]
    pub ven_id: String,
    #[serde(flatten)]
    pub body: SubscriptionIn,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(values: Value) -> ReportIn {
        serde_json::from_value(json!({"programID": "prices", "eventID": "prices",
            "clientName": "home 4", "resources": [{"resourceName": "meter",
            "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": values}]}]}]}))
        .unwrap()
    }

    #[test]
    fn reports_and_subscriptions_are_checked_for_shape_and_bounds() {
        assert!(report(json!([1.5])).check().is_ok());
        assert!(report(json!([{"nested": 1}])).check().is_err());
        assert!(report(json!(vec![1; 101])).check().is_err());
        let mut r = report(json!([1]));
        r.client_name = String::new();
        assert!(r.check().is_err());
        let sub = |objects: Value, url: &str| -> SubscriptionIn {
            serde_json::from_value(json!({"clientName": "x", "programID": "prices",
                "objectOperations": [{"objects": objects, "operations": ["PUT"],
                "callbackUrl": url}]}))
            .unwrap()
        };
        assert!(sub(json!(["EVENT"]), "http://127.0.0.1:9/cb")
            .check()
            .is_ok());
        assert!(sub(json!(["EVENTS"]), "http://127.0.0.1:9/cb")
            .check()
            .is_err());
        assert!(sub(json!(["EVENT"]), "ftp://x").check().is_err());
        let s = sub(json!(["EVENT"]), "http://a/cb");
        assert_eq!(s.wants("EVENT", "PUT"), vec![("http://a/cb", None)]);
        assert!(s.wants("EVENT", "POST").is_empty());
    }

    #[test]
    fn times_and_units_are_written_as_openadr_reads_them() {
        assert_eq!(rfc3339(1_795_543_200_250), "2026-11-24T18:00:00Z");
        assert_eq!(kw_of_slot_mwh(2_500_000), 10.0);
        assert_eq!(tokens(300_000), 0.3);
        assert_eq!(envelope_event_id("street-1/home-4").len(), 9 + 16);
        assert_eq!(base64_decode("Z206c2VjcmV0").unwrap(), b"gm:secret");
    }
}
