//! OCPP 2.0.1 (subprotocol `ocpp2.0.1`): what differs from 1.6J.
//!
//! From the charging station: BootNotification, Heartbeat, StatusNotification (evse 1's
//! connector), Authorize, TransactionEvent (`Started`, `Updated`, `Ended`, with their meter
//! values) and MeterValues. The energy register of every meter value becomes a sample signed
//! with the charger's key, as in 1.6J.
//!
//! Toward the station, after it booted: the smart-charging variables of its device model
//! (`SmartChargingCtrlr`: `Enabled`, `RateUnit`, `PeriodsPerSchedule`, `ProfileStackLevel`, and
//! `Entries` of `ChargingProfiles`) by GetVariables; then, where smart charging is enabled, the
//! site's limit as a `ChargingStationMaxProfile` on evse 0 and our plan as a `TxDefaultProfile`
//! on evse 1 (K01), fitted to those variables, and the composite schedule the station computes
//! from them (K08), logged beside ours. A plan is replaced by SetChargingProfile and cleared by
//! ClearChargingProfile (K10) when a transaction ends. A station with smart charging disabled or
//! absent is driven by RequestStartTransaction / RequestStopTransaction instead (F01, F03).

use super::{
    now_rfc3339, send_site_and_plan, timestamp_ms, CallError, CentralSystem, Link, Schedule,
    SmartChargingConfig, PLAN_PROFILE_ID,
};
use serde_json::{json, Value};

/// The OCPP-J 2.0 error code for a payload that does not parse (1.6J spelt it
/// `FormationViolation`).
const FORMAT_VIOLATION: &str = "FormatViolation";

/// The device model's smart-charging variables read after each boot: (variable, instance), all
/// of the `SmartChargingCtrlr` component.
pub const SMART_CHARGING_VARIABLES: [(&str, Option<&str>); 5] = [
    ("Enabled", None),
    ("RateUnit", None),
    ("PeriodsPerSchedule", None),
    ("ProfileStackLevel", None),
    ("Entries", Some("ChargingProfiles")),
];

/// The GetVariables request for [`SMART_CHARGING_VARIABLES`].
pub fn get_variables_request() -> Value {
    let data: Vec<Value> = SMART_CHARGING_VARIABLES
        .iter()
        .map(|(name, instance)| {
            let mut variable = json!({"name": name});
            if let Some(i) = instance {
                variable["instance"] = json!(i);
            }
            json!({"component": {"name": "SmartChargingCtrlr"}, "variable": variable})
        })
        .collect();
    json!({"getVariableData": data})
}

/// Whether smart charging is enabled, and its configuration, from a GetVariables answer. A
/// variable not answered `Accepted` takes the most cautious reading (one period in amperes, stack
/// level 0); smart charging counts as enabled only where `Enabled` is answered `true`.
pub fn config_from_variables(v: &Value) -> (bool, SmartChargingConfig) {
    let mut c = SmartChargingConfig {
        max_stack_level: 0,
        allowed_units: vec!["Current".into()],
        max_periods: 1,
        max_profiles: 1,
    };
    let mut enabled = false;
    for r in v["getVariableResult"].as_array().into_iter().flatten() {
        if r["attributeStatus"] != "Accepted" || r["component"]["name"] != "SmartChargingCtrlr" {
            continue;
        }
        let value = r["attributeValue"].as_str().unwrap_or("").trim();
        match r["variable"]["name"].as_str().unwrap_or("") {
            "Enabled" => enabled = value.eq_ignore_ascii_case("true"),
            "RateUnit" => {
                // A member list of "A" and "W"; named as 1.6J's configuration names them.
                let units: Vec<String> = value
                    .split(',')
                    .filter_map(|u| match u.trim() {
                        "A" => Some("Current".to_string()),
                        "W" => Some("Power".to_string()),
                        _ => None,
                    })
                    .collect();
                if !units.is_empty() {
                    c.allowed_units = units;
                }
            }
            "PeriodsPerSchedule" => c.max_periods = value.parse().unwrap_or(1),
            "ProfileStackLevel" => c.max_stack_level = value.parse().unwrap_or(0),
            "Entries" if r["variable"]["instance"] == "ChargingProfiles" => {
                c.max_profiles = value.parse().unwrap_or(1)
            }
            _ => {}
        }
    }
    c.max_periods = c.max_periods.max(1);
    (enabled, c)
}

/// A charging profile as 2.0.1 writes it: one schedule, in an array, with an id of its own.
pub fn profile_json(id: u32, stack: u32, purpose: &str, s: &Schedule, start: &str) -> Value {
    json!({
        "id": id,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [{
            "id": id,
            "startSchedule": start,
            "chargingRateUnit": s.unit,
            "chargingSchedulePeriod": s.periods.iter()
                .map(|(t, l)| json!({"startPeriod": t, "limit": l}))
                .collect::<Vec<_>>(),
        }],
    })
}

/// The SetChargingProfile request for our plan on evse 1, valid from `start` to `valid_to`
/// (RFC 3339) for `duration_s`.
pub fn set_plan_request(
    schedule: &Schedule,
    stack: u32,
    start: &str,
    valid_to: &str,
    duration_s: u64,
) -> Value {
    let mut profile = profile_json(PLAN_PROFILE_ID, stack, "TxDefaultProfile", schedule, start);
    profile["validFrom"] = json!(start);
    profile["validTo"] = json!(valid_to);
    profile["chargingSchedule"][0]["duration"] = json!(duration_s);
    json!({"evseId": 1, "chargingProfile": profile})
}

/// The ClearChargingProfile request for our plan.
pub fn clear_plan_request() -> Value {
    json!({"chargingProfileId": PLAN_PROFILE_ID})
}

/// The RequestStartTransaction request on evse 1 for `id_token`, numbered `remote_start_id`.
pub fn request_start(id_token: &str, remote_start_id: u64) -> Value {
    json!({
        "idToken": {"idToken": id_token, "type": "Central"},
        "remoteStartId": remote_start_id,
        "evseId": 1,
    })
}

/// A composite schedule as a station answers GetCompositeSchedule, in our form.
pub fn composite_from(v: &Value) -> Option<Schedule> {
    let s = &v["schedule"];
    let unit = match s["chargingRateUnit"].as_str()? {
        "W" => "W",
        "A" => "A",
        _ => return None,
    };
    let periods = s["chargingSchedulePeriod"]
        .as_array()?
        .iter()
        .map(|p| {
            Some((
                u32::try_from(p["startPeriod"].as_u64()?).ok()?,
                p["limit"].as_f64()?,
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Schedule { unit, periods })
}

/// Reads the station's smart-charging variables, then (where smart charging is enabled) sends
/// the site limit and our plan fitted to them, and logs our composite limit beside the
/// station's own.
pub(super) async fn smart_charging(link: &Link) {
    let (cs, cp) = (&link.cs, link.cp.as_str());
    let (enabled, conf) = match link.call("GetVariables", get_variables_request()).await {
        Ok(v) => config_from_variables(&v),
        Err(e) => {
            cs.log(json!({"event": "configuration_failed", "charge_point": cp, "error": e}));
            return;
        }
    };
    cs.log(
        json!({"event": "configuration", "charge_point": cp, "version": "2.0.1",
        "smart_charging_enabled": enabled, "smart_charging": conf}),
    );
    cs.update(cp, |s| {
        s.smart_charging = Some(conf.clone());
        s.boots += 1;
        if !enabled {
            s.takes_profiles = Some(false);
        }
    });
    if !enabled {
        return;
    }
    let Some(ours) = send_site_and_plan(link, &conf).await else {
        return;
    };
    // What the station makes of the profiles it holds, over the schedule's breakpoints and a
    // quarter hour beyond the last.
    let duration_s = ours.periods.last().map_or(0, |p| p.0) + 900;
    let r = link
        .call(
            "GetCompositeSchedule",
            json!({"duration": duration_s, "evseId": 1, "chargingRateUnit": ours.unit}),
        )
        .await;
    let theirs = r.as_ref().ok().and_then(composite_from);
    cs.log(json!({"event": "composite_schedule", "charge_point": cp,
        "status": r.as_ref().map(|v| v["status"].clone()).unwrap_or_else(|e| json!(e)),
        "schedule": theirs, "agrees": theirs.as_ref() == Some(&ours)}));
}

fn violation(what: impl Into<String>) -> CallError {
    (FORMAT_VIOLATION, what.into())
}

/// A meter value's number, exactly as sent, in mWh: `value` × 10^`multiplier` `unit` (Wh or kWh).
pub fn energy_mwh(value: &Value, unit: &str, multiplier: i64) -> Option<u64> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let base: i64 = match unit {
        "Wh" => 3,
        "kWh" => 6,
        _ => return None,
    };
    let scale = u32::try_from(base.checked_add(multiplier)?).ok()?;
    if scale > 18 {
        return None;
    }
    gridmesh_types::parse_fixed(&text, scale)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
}

/// The samples in `meter_value` (a MeterValueType array): each one's energy register signed,
/// its power kept. How many there were.
fn meter_values(cs: &CentralSystem, cp: &str, meter_value: &Value) -> Result<usize, CallError> {
    // Parse all first: a message with one bad value changes nothing.
    let mut samples = Vec::new();
    for mv in meter_value.as_array().into_iter().flatten() {
        let at = mv["timestamp"]
            .as_str()
            .and_then(timestamp_ms)
            .ok_or_else(|| violation("meterValue timestamp missing or not RFC 3339"))?;
        let (mut energy, mut power) = (None, 0i32);
        for sv in mv["sampledValue"].as_array().into_iter().flatten() {
            let unit = sv["unitOfMeasure"]["unit"].as_str();
            let multiplier = sv["unitOfMeasure"]["multiplier"].as_i64().unwrap_or(0);
            let measurand = sv["measurand"]
                .as_str()
                .unwrap_or("Energy.Active.Import.Register");
            match measurand {
                "Energy.Active.Import.Register" => {
                    let unit = unit.unwrap_or("Wh");
                    energy = Some(energy_mwh(&sv["value"], unit, multiplier).ok_or_else(|| {
                        violation(format!(
                            "energy register {} {unit} (multiplier {multiplier}) is not a register reading",
                            sv["value"]
                        ))
                    })?);
                }
                "Power.Active.Import" => {
                    let v = sv["value"]
                        .as_f64()
                        .ok_or_else(|| violation("power value is not a number"))?;
                    let w = v
                        * 10f64.powi(multiplier.clamp(-9, 9) as i32)
                        * if unit == Some("kW") { 1e3 } else { 1.0 };
                    power = w.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
                }
                _ => {}
            }
        }
        if let Some(e) = energy {
            samples.push((at, e, power));
        }
    }
    for (at, e, power) in &samples {
        cs.sample(cp, *at, *e, *power);
    }
    Ok(samples.len())
}

/// Answers a call from a 2.0.1 station.
pub(super) fn handle_call(
    cs: &CentralSystem,
    cp: &str,
    action: &str,
    p: &Value,
) -> Result<Value, CallError> {
    let token_status = |p: &Value| -> Result<&'static str, CallError> {
        let token = p["idToken"]["idToken"]
            .as_str()
            .ok_or_else(|| violation("idToken.idToken missing"))?;
        Ok(
            if cs.cfg.id_tags.is_empty() || cs.cfg.id_tags.iter().any(|t| t == token) {
                "Accepted"
            } else {
                "Unknown"
            },
        )
    };
    match action {
        "BootNotification" => {
            let station = &p["chargingStation"];
            if !station.is_object() {
                return Err(violation("chargingStation missing"));
            }
            cs.log(
                json!({"event": "boot", "charge_point": cp, "version": "2.0.1",
                "vendor": station["vendorName"], "model": station["model"],
                "reason": p["reason"]}),
            );
            Ok(json!({"currentTime": now_rfc3339(), "interval": 300, "status": "Accepted"}))
        }
        "Heartbeat" => Ok(json!({"currentTime": now_rfc3339()})),
        "StatusNotification" => {
            let status = p["connectorStatus"]
                .as_str()
                .ok_or_else(|| violation("connectorStatus missing"))?;
            if p["evseId"] == 1 {
                cs.update(cp, |s| s.status = Some(status.to_string()));
            }
            cs.log(json!({"event": "status", "charge_point": cp,
                "connector": p["evseId"], "status": status}));
            Ok(json!({}))
        }
        "Authorize" => Ok(json!({"idTokenInfo": {"status": token_status(p)?}})),
        "TransactionEvent" => {
            let event = p["eventType"]
                .as_str()
                .filter(|e| matches!(*e, "Started" | "Updated" | "Ended"))
                .ok_or_else(|| violation("eventType missing or not Started, Updated or Ended"))?;
            let tx = p["transactionInfo"]["transactionId"]
                .as_str()
                .filter(|t| !t.is_empty() && t.len() <= 36)
                .ok_or_else(|| violation("transactionInfo.transactionId missing"))?
                .to_string();
            p["timestamp"]
                .as_str()
                .and_then(timestamp_ms)
                .ok_or_else(|| violation("timestamp missing or not RFC 3339"))?;
            let token = if p["idToken"].is_null() {
                None
            } else {
                Some(token_status(p)?)
            };
            let n = meter_values(cs, cp, &p["meterValue"])?;
            let charging_state = p["transactionInfo"]["chargingState"].as_str();
            cs.update(cp, |s| {
                if let Some(c) = charging_state {
                    s.charging_state = Some(c.to_string());
                }
                if event == "Ended" {
                    s.transaction = None;
                    s.charging_state = None;
                    s.power_w = Some(0.0);
                } else {
                    s.transaction = Some(tx.clone());
                }
            });
            let name = match event {
                "Started" => "transaction_started",
                "Ended" => "transaction_stopped",
                _ => "transaction_updated",
            };
            cs.log(
                json!({"event": name, "charge_point": cp, "transaction_id": tx,
                "trigger": p["triggerReason"], "charging_state": charging_state,
                "samples": n}),
            );
            Ok(match token {
                Some(status) => json!({"idTokenInfo": {"status": status}}),
                None => json!({}),
            })
        }
        "MeterValues" => {
            if p["meterValue"].as_array().is_none_or(|a| a.is_empty()) {
                return Err(violation("meterValue missing"));
            }
            let n = meter_values(cs, cp, &p["meterValue"])?;
            cs.log(json!({"event": "meter_values", "charge_point": cp, "samples": n}));
            Ok(json!({}))
        }
        other => Err(("NotImplemented", format!("{other} is not supported"))),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{OcppConfig, SampleSink};
    use super::*;
    use gridmesh_ledger::crypto::Keypair;
    use gridmesh_ledger::telemetry::RawSample;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    pub(in crate::ocpp) struct Kept(pub(in crate::ocpp) Mutex<Vec<RawSample>>);
    impl SampleSink for Kept {
        fn publish(&self, sample: RawSample) {
            self.0.lock().unwrap().push(sample);
        }
    }

    /// A central system for charger `CS_1`, its samples kept.
    pub(in crate::ocpp) fn system() -> (Arc<CentralSystem>, Arc<Kept>) {
        let kept = Arc::new(Kept::default());
        let cs = CentralSystem::new(
            OcppConfig {
                chargers: HashMap::from([("CS_1".to_string(), Keypair::generate())]),
                id_tags: vec!["RFID-7".into()],
                chain_id: "test".into(),
                site_limit_w: None,
                plan: Vec::new(),
                volts: 230.0,
                phases: 3,
            },
            kept.clone(),
        );
        (cs, kept)
    }

    fn register(wh: Value) -> Value {
        json!([{"timestamp": "2026-12-06T10:00:00Z", "sampledValue": [
            {"value": wh, "measurand": "Energy.Active.Import.Register",
             "unitOfMeasure": {"unit": "Wh"}},
            {"value": 7.4, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}}]}])
    }

    #[test]
    fn the_device_model_s_variables_give_the_smart_charging_configuration() {
        let answer = |name: &str, instance: Option<&str>, status: &str, value: &str| {
            let mut variable = json!({"name": name});
            if let Some(i) = instance {
                variable["instance"] = json!(i);
            }
            json!({"attributeStatus": status, "component": {"name": "SmartChargingCtrlr"},
                "variable": variable, "attributeValue": value})
        };
        let (enabled, c) = config_from_variables(&json!({"getVariableResult": [
            answer("Enabled", None, "Accepted", "true"),
            answer("RateUnit", None, "Accepted", "A,W"),
            answer("PeriodsPerSchedule", None, "Accepted", "24"),
            answer("ProfileStackLevel", None, "Accepted", "8"),
            answer("Entries", Some("ChargingProfiles"), "Accepted", "12"),
        ]}));
        assert!(enabled);
        assert_eq!(c.allowed_units, vec!["Current", "Power"]);
        assert!(c.takes_power());
        assert_eq!(
            (c.max_periods, c.max_stack_level, c.max_profiles),
            (24, 8, 12)
        );
        // Unknown variables and a disabled controller: the most cautious reading.
        let (enabled, c) = config_from_variables(&json!({"getVariableResult": [
            answer("Enabled", None, "Accepted", "false"),
            answer("RateUnit", None, "UnknownVariable", "W"),
            answer("PeriodsPerSchedule", None, "Accepted", "zero"),
        ]}));
        assert!(!enabled);
        assert_eq!(c.allowed_units, vec!["Current"]);
        assert_eq!(c.max_periods, 1);
        let (enabled, _) = config_from_variables(&json!({}));
        assert!(!enabled, "no answer is no smart charging");
        // The request names each variable of the controller once.
        let req = get_variables_request();
        assert_eq!(req["getVariableData"].as_array().unwrap().len(), 5);
        assert_eq!(
            req["getVariableData"][4]["variable"]["instance"],
            "ChargingProfiles"
        );
    }

    #[test]
    fn meter_values_parse_exactly_with_units_and_multipliers() {
        assert_eq!(energy_mwh(&json!(1000.6167), "kWh", 0), Some(1_000_616_700));
        assert_eq!(energy_mwh(&json!(1234), "Wh", 0), Some(1_234_000));
        assert_eq!(energy_mwh(&json!(12.5), "Wh", 3), Some(12_500_000));
        assert_eq!(energy_mwh(&json!(1234), "Wh", -3), Some(1_234));
        assert_eq!(energy_mwh(&json!(1.5), "Wh", -3), None, "below a mWh");
        assert_eq!(energy_mwh(&json!(-5), "Wh", 0), None);
        assert_eq!(energy_mwh(&json!("5"), "Wh", 0), None);
        assert_eq!(energy_mwh(&json!(5), "varh", 0), None);
        assert_eq!(energy_mwh(&json!(5), "Wh", -9), None);
    }

    #[test]
    fn a_transaction_s_events_drive_the_charger_state_and_sign_its_registers() {
        let (cs, kept) = system();
        let started = json!({"eventType": "Started", "timestamp": "2026-12-06T10:00:00Z",
            "triggerReason": "Authorized", "seqNo": 0,
            "transactionInfo": {"transactionId": "tx-9", "chargingState": "Charging"},
            "idToken": {"idToken": "RFID-7", "type": "ISO14443"},
            "meterValue": register(json!(1000))});
        let r = handle_call(&cs, "CS_1", "TransactionEvent", &started).unwrap();
        assert_eq!(r["idTokenInfo"]["status"], "Accepted");
        let s = cs.charger("CS_1");
        assert_eq!(s.transaction.as_deref(), Some("tx-9"));
        assert!(s.plugged());
        assert_eq!(s.register_mwh, Some(1_000_000));
        assert_eq!(s.power_w, Some(7_400.0));
        assert_eq!(kept.0.lock().unwrap().len(), 1);

        let ended = json!({"eventType": "Ended", "timestamp": "2026-12-06T10:15:00Z",
            "triggerReason": "EVDisconnected", "seqNo": 1,
            "transactionInfo": {"transactionId": "tx-9"}, "meterValue": register(json!(2850.5))});
        assert_eq!(
            handle_call(&cs, "CS_1", "TransactionEvent", &ended).unwrap(),
            json!({})
        );
        let s = cs.charger("CS_1");
        assert_eq!(s.transaction, None);
        assert_eq!(s.register_mwh, Some(2_850_500));
        assert_eq!(s.power_w, Some(0.0));
        assert_eq!(kept.0.lock().unwrap().len(), 2);

        // An unknown token is told so.
        let auth = json!({"idToken": {"idToken": "RFID-0", "type": "ISO14443"}});
        assert_eq!(
            handle_call(&cs, "CS_1", "Authorize", &auth).unwrap()["idTokenInfo"]["status"],
            "Unknown"
        );
    }

    #[test]
    fn malformed_messages_get_a_format_violation_and_change_nothing() {
        let (cs, kept) = system();
        let before = cs.charger("CS_1");
        let good = json!({"eventType": "Updated", "timestamp": "2026-12-06T10:00:00Z",
            "triggerReason": "MeterValuePeriodic", "seqNo": 3,
            "transactionInfo": {"transactionId": "tx-1"}, "meterValue": register(json!(10))});
        let broken = |f: &dyn Fn(&mut Value)| {
            let mut p = good.clone();
            f(&mut p);
            p
        };
        let bad = [
            broken(&|p| p["eventType"] = json!("Paused")),
            broken(&|p| p["transactionInfo"] = json!({})),
            broken(&|p| p["timestamp"] = json!("yesterday")),
            broken(&|p| p["idToken"] = json!({"type": "Central"})),
            // One good sample and one nonsense register: neither is kept.
            broken(&|p| {
                p["meterValue"] = json!([register(json!(20))[0].clone(),
                    {"timestamp": "2026-12-06T10:01:00Z",
                     "sampledValue": [{"value": -3, "unitOfMeasure": {"unit": "Wh"}}]}])
            }),
            broken(&|p| {
                p["meterValue"][0]["sampledValue"][0]["unitOfMeasure"]["unit"] = json!("varh")
            }),
        ];
        for p in &bad {
            let e = handle_call(&cs, "CS_1", "TransactionEvent", p).unwrap_err();
            assert_eq!(e.0, "FormatViolation", "{p}: {e:?}");
        }
        for (action, p) in [
            ("MeterValues", json!({"evseId": 1})),
            ("StatusNotification", json!({"evseId": 1})),
            ("BootNotification", json!({"reason": "PowerUp"})),
            ("Authorize", json!({})),
        ] {
            let e = handle_call(&cs, "CS_1", action, &p).unwrap_err();
            assert_eq!(e.0, "FormatViolation", "{action}");
        }
        assert_eq!(
            handle_call(&cs, "CS_1", "ReserveNow", &json!({}))
                .unwrap_err()
                .0,
            "NotImplemented"
        );
        assert_eq!(cs.charger("CS_1"), before);
        assert!(kept.0.lock().unwrap().is_empty());
        // The good one still goes through.
        handle_call(&cs, "CS_1", "TransactionEvent", &good).unwrap();
        assert_eq!(cs.charger("CS_1").transaction.as_deref(), Some("tx-1"));
    }

    #[test]
    fn profiles_are_written_as_2_0_1_writes_them() {
        let s = Schedule {
            unit: "W",
            periods: vec![(0, 7_400.0), (900, 3_700.0)],
        };
        let r = set_plan_request(&s, 1, "2026-12-06T10:00:00Z", "2026-12-06T12:00:00Z", 7_200);
        assert_eq!(r["evseId"], 1);
        let p = &r["chargingProfile"];
        assert_eq!(p["id"], PLAN_PROFILE_ID);
        assert_eq!(p["chargingProfilePurpose"], "TxDefaultProfile");
        assert_eq!(p["chargingSchedule"][0]["duration"], 7_200);
        assert_eq!(
            p["chargingSchedule"][0]["chargingSchedulePeriod"][1],
            json!({"startPeriod": 900, "limit": 3_700.0})
        );
        let answer = json!({"status": "Accepted", "schedule": {"evseId": 1, "duration": 1800,
            "scheduleStart": "2026-12-06T10:00:00Z", "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7400.0},
                                       {"startPeriod": 900, "limit": 3700.0}]}});
        assert_eq!(composite_from(&answer), Some(s));
        assert_eq!(composite_from(&json!({"status": "Rejected"})), None);
    }
}
