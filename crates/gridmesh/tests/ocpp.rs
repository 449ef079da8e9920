//! Interop: the `ocpp` Python package as an OCPP 1.6J charge point and as a 2.0.1 charging
//! station against our central system (`gridmesh device ocpp`, and the central system the home
//! drives). 1.6J: the charger takes current only and two periods per schedule: the central system
//! reads that first and fits the site limit and the plan to it; the effective limit is the lower
//! profile per interval; the transaction's energy registers reach a node's gateway as signed
//! samples through Mosquitto; the plan is cleared when the transaction stops. 2.0.1: the same
//! through the device model (GetVariables), SetChargingProfile, GetCompositeSchedule (the
//! station's composite agrees with ours), TransactionEvent and ClearChargingProfile; and a station
//! without smart charging is started and stopped instead (RequestStart/StopTransaction).

mod common;

use common::{free_port, get_json, new_key, python, wait_for, GatewayNode, Mosquitto};
use std::process::{Command, Stdio};

/// Runs interop script `script` with `args` against the central system `cs` and waits for `cs`
/// to end: what the peer printed, and the central system's event log.
fn exchange(
    py: &std::path::Path,
    cs: std::process::Child,
    script: &str,
    args: &[&str],
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let out = Command::new(py)
        .arg(common::interop_script(script))
        .args(args)
        .output()
        .expect("run the peer");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peer = serde_json::from_slice(&out.stdout).unwrap();
    let cs_out = cs.wait_with_output().unwrap();
    assert!(cs_out.status.success());
    (peer, serde_json::from_slice(&cs_out.stdout).unwrap())
}

/// `gridmesh device ocpp` for charger `id` (key file `key`), publishing on `mqtt`, with an 11 kW
/// site limit and a plan of 7.4, 3.7 and 11 kW quarter hours; stops after one session. Its port.
fn central_system(id: &str, key: &str, mqtt: &str) -> (u16, std::process::Child) {
    let port = free_port();
    let cs = Command::new(common::BIN)
        .args(["device", "ocpp", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--charger", &format!("{id}={key}"), "--id-tag", "RFID-0042"])
        .args(["--mqtt", mqtt, "--site-limit-kw", "11"])
        .args([
            "--plan",
            "0:7.4,900:3.7,1800:11",
            "--sessions",
            "1",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the central system");
    wait_for("the central system to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (port, cs)
}

#[test]
fn an_ocpp_charge_point_is_smart_charged_and_metered_onto_the_gateway() {
    let (py, broker) = (python(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    let g = GatewayNode::start(dir.path(), &broker);
    let (url, mqtt) = (g.url.clone(), g.mqtt.clone());
    let (charger_key, charger) = new_key(dir.path(), "charger");
    g.register_device(&charger_key, "ev-charger", "11", "street-1/house-2");

    let (port, cs) = central_system("CP_1", &charger_key, &mqtt);
    let (cp, events) = exchange(
        &py,
        cs,
        "ocpp_charge_point.py",
        &[
            "--url",
            &format!("ws://127.0.0.1:{port}/ocpp/CP_1"),
            "--meter-values",
            "3",
        ],
    );
    let event = |name: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == name).collect()
    };

    // What the charge point saw.
    assert_eq!(cp["boot"], "Accepted");
    assert_eq!(cp["unknown_tag"], "Invalid");
    assert_eq!(cp["authorize"], "Accepted");
    assert_eq!(cp["stop"], "Accepted");
    assert_eq!(
        cp["asked_keys"],
        serde_json::json!([
            "ChargeProfileMaxStackLevel",
            "ChargingScheduleAllowedChargingRateUnit",
            "ChargingScheduleMaxPeriods",
            "MaxChargingProfilesInstalled"
        ])
    );
    let profiles = cp["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 2, "{cp}");
    for p in profiles {
        assert_eq!(p["accepted"], true, "{p}");
        let s = &p["profile"]["charging_schedule"];
        assert_eq!(s["charging_rate_unit"], "A");
        assert!(s["charging_schedule_period"].as_array().unwrap().len() <= 2);
    }
    assert_eq!(
        profiles[0]["profile"]["charging_profile_purpose"],
        "ChargePointMaxProfile"
    );
    assert_eq!(cp["cleared"].as_array().unwrap().len(), 1);

    // What the central system did: 11 kW site = 15.9 A, the plan 7.4 kW then the lowest of
    // 3.7 and 11 kW = 10.7 A then 5.3 A; the effective limit is the lower one per interval.
    let conf = &event("configuration")[0]["smart_charging"];
    assert_eq!(conf["max_periods"], 2);
    assert_eq!(
        event("effective_limit")[0]["schedule"]["periods"],
        serde_json::json!([[0, 10.7], [900, 5.3]])
    );
    assert_eq!(event("plan_cleared")[0]["status"], "Accepted");
    assert_eq!(event("meter_values").len(), 3);

    // The transaction's registers (start, 3 meter values, stop) are signed samples in the node.
    wait_for("the charger's samples in the node", || g.accepted() == 5);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let slot = (now_ms - 1) / 900_000;
    let total: u64 = [slot - 1, slot]
        .iter()
        .map(|s| {
            get_json(&format!("{url}/v1/telemetry/{charger}/{s}"))["samples"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 5);
    g.node.terminate();
}

#[test]
fn an_ocpp_2_0_1_station_is_smart_charged_through_its_device_model_and_metered() {
    let (py, broker) = (python(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    let g = GatewayNode::start(dir.path(), &broker);
    let (url, mqtt) = (g.url.clone(), g.mqtt.clone());
    let (charger_key, charger) = new_key(dir.path(), "station");
    g.register_device(&charger_key, "ev-charger", "22", "street-1/house-3");

    let (port, cs) = central_system("CS_1", &charger_key, &mqtt);
    // Watts and three periods per schedule.
    let url_201 = format!("ws://127.0.0.1:{port}/ocpp/CS_1");
    let (st, events) = exchange(
        &py,
        cs,
        "ocpp201_charging_station.py",
        &["--url", &url_201, "--rate-unit", "W", "--periods", "3"],
    );
    let event = |name: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == name).collect()
    };

    // What the station saw (every message checked against the 2.0.1 schemas by the package).
    assert_eq!(st["subprotocol"], "ocpp2.0.1");
    assert_eq!(st["boot"], "Accepted");
    assert_eq!(st["unknown_token"], "Unknown");
    assert_eq!(st["authorize"], "Accepted");
    assert_eq!(st["started"], "Accepted");
    assert_eq!(
        st["asked"],
        serde_json::json!([
            "SmartChargingCtrlr.Enabled",
            "SmartChargingCtrlr.RateUnit",
            "SmartChargingCtrlr.PeriodsPerSchedule",
            "SmartChargingCtrlr.ProfileStackLevel",
            "SmartChargingCtrlr.Entries/ChargingProfiles"
        ])
    );
    let sets = st["set_requests"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{st}");
    for s in sets {
        assert_eq!(s["accepted"], true, "{s}");
        let sched = &s["profile"]["charging_schedule"][0];
        assert_eq!(sched["charging_rate_unit"], "W");
        assert!(sched["charging_schedule_period"].as_array().unwrap().len() <= 3);
    }
    assert_eq!(sets[0]["evse_id"], 0);
    assert_eq!(
        sets[0]["profile"]["charging_profile_purpose"],
        "ChargingStationMaxProfile"
    );
    assert_eq!(sets[1]["evse_id"], 1);
    assert_eq!(
        sets[1]["profile"]["charging_profile_purpose"],
        "TxDefaultProfile"
    );
    assert_eq!(st["composite_requests"].as_array().unwrap().len(), 1);
    assert_eq!(st["cleared"].as_array().unwrap().len(), 1);

    // What the central system did: the site's 11 kW over the plan's 7.4, 3.7 and 11 kW in watts;
    // the station's composite schedule agrees with ours.
    let conf = &event("configuration")[0];
    assert_eq!(conf["version"], "2.0.1");
    assert_eq!(conf["smart_charging_enabled"], true);
    assert_eq!(conf["smart_charging"]["max_periods"], 3);
    assert_eq!(
        event("effective_limit")[0]["schedule"]["periods"],
        serde_json::json!([[0, 7400.0], [900, 3700.0], [1800, 11000.0]])
    );
    let composite = event("composite_schedule")[0];
    assert_eq!(composite["status"], "Accepted");
    assert_eq!(composite["agrees"], true, "{composite}");
    assert_eq!(event("plan_cleared")[0]["status"], "Accepted");
    assert_eq!(event("transaction_updated").len(), 3);

    // The registers (start, three updates, end) are signed samples in the node.
    wait_for("the station's samples in the node", || g.accepted() == 5);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let slot = (now_ms - 1) / 900_000;
    let total: u64 = [slot - 1, slot]
        .iter()
        .map(|s| {
            get_json(&format!("{url}/v1/telemetry/{charger}/{s}"))["samples"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 5);
    g.node.terminate();
}

/// Samples kept in memory.
#[derive(Default)]
struct Kept(std::sync::Mutex<Vec<gridmesh_ledger::telemetry::RawSample>>);

impl gridmesh_gateway::ocpp::SampleSink for Kept {
    fn publish(&self, sample: gridmesh_ledger::telemetry::RawSample) {
        self.0.lock().unwrap().push(sample);
    }
}

/// The controller's calls (what the home's loop uses) on a 2.0.1 station without smart
/// charging: no profile is sent, and charging is started and stopped by request.
#[test]
fn a_2_0_1_station_without_smart_charging_is_started_and_stopped_by_request() {
    use gridmesh_gateway::ocpp::{serve_on, CentralSystem, OcppConfig, Version};
    let py = python();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kept = std::sync::Arc::new(Kept::default());
    let key = gridmesh_ledger::crypto::Keypair::generate();
    let cs = CentralSystem::new(
        OcppConfig {
            chargers: std::collections::HashMap::from([("CS_9".to_string(), key)]),
            id_tags: vec!["RFID-0042".into()],
            chain_id: "interop".into(),
            site_limit_w: Some(11_000.0),
            plan: vec![gridmesh_gateway::ocpp::PlanStep {
                start_s: 0,
                limit_w: 7_400.0,
            }],
            volts: 230.0,
            phases: 3,
        },
        kept.clone(),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(serve_on(cs.clone(), listener));
    let station = Command::new(&py)
        .arg(common::interop_script("ocpp201_charging_station.py"))
        .args(["--url", &format!("ws://127.0.0.1:{port}/ocpp/CS_9")])
        .args(["--smart-charging", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the charging station");

    wait_for("the station to be plugged in and configured", || {
        let s = cs.charger("CS_9");
        s.plugged() && s.smart_charging.is_some()
    });
    let s = cs.charger("CS_9");
    assert_eq!(s.version, Some(Version::V201));
    assert_eq!(s.takes_profiles, Some(false), "{s:?}");
    assert!(rt.block_on(cs.remote_start("CS_9", "RFID-0042")).unwrap());
    wait_for("the transaction to start", || {
        cs.charger("CS_9").transaction.is_some()
    });
    wait_for("meter values", || kept.0.lock().unwrap().len() >= 3);
    let s = cs.charger("CS_9");
    assert_eq!(s.transaction.as_deref(), Some("tx-CS_9"));
    assert_eq!(s.power_w, Some(7_400.0));
    assert!(rt.block_on(cs.remote_stop("CS_9")).unwrap());
    let out = station.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ocpp201_charging_station.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["remote_start"], true);
    assert_eq!(st["remote_stop"], true);
    assert_eq!(st["set_requests"], serde_json::json!([]), "no profile sent");
    assert_eq!(st["cleared"], serde_json::json!([]));
    wait_for("the transaction to end", || {
        cs.charger("CS_9").transaction.is_none()
    });
    // Every register (begin, updates, end) was signed, none lost.
    let n = kept.0.lock().unwrap().len() as u64;
    assert_eq!(n, st["updates"].as_u64().unwrap() + 2);
    let events = cs.events.lock().unwrap().clone();
    assert!(events
        .iter()
        .any(|e| e["event"] == "remote_start" && e["accepted"] == true));
    assert!(events
        .iter()
        .any(|e| e["event"] == "plan_cleared" && e["status"] == "NoProfile"));
}

/// A client that offers only subprotocols we do not speak is closed at once, and one for a
/// charger we do not know is refused before the upgrade.
#[test]
fn unknown_subprotocols_and_unknown_chargers_are_turned_away() {
    use gridmesh_gateway::ocpp::{serve_on, CentralSystem, OcppConfig};
    let py = python();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cs = CentralSystem::new(
        OcppConfig {
            chargers: std::collections::HashMap::from([(
                "CS_1".to_string(),
                gridmesh_ledger::crypto::Keypair::generate(),
            )]),
            id_tags: Vec::new(),
            chain_id: "interop".into(),
            site_limit_w: None,
            plan: Vec::new(),
            volts: 230.0,
            phases: 3,
        },
        std::sync::Arc::new(Kept::default()),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(serve_on(cs.clone(), listener));
    let script = r#"
import asyncio, json, sys, websockets
async def main(port):
    out = {}
    async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/CS_1", subprotocols=["ocpp2.1"]) as ws:
        out["subprotocol"] = ws.subprotocol
        try:
            await asyncio.wait_for(ws.recv(), 5)
            out["closed"] = False
        except websockets.exceptions.ConnectionClosed:
            out["closed"] = True
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/NOBODY", subprotocols=["ocpp2.0.1"]):
            out["unknown"] = "accepted"
    except websockets.exceptions.InvalidStatus as e:
        out["unknown"] = e.response.status_code
    print(json.dumps(out))
asyncio.run(main(int(sys.argv[1])))
"#;
    let out = Command::new(&py)
        .args(["-c", script, &port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["subprotocol"], serde_json::Value::Null);
    assert_eq!(r["closed"], true);
    assert_eq!(r["unknown"], 404);
    let events = cs.events.lock().unwrap().clone();
    assert!(events.iter().any(|e| e["event"] == "unsupported_protocol"));
    assert!(!events.iter().any(|e| e["event"] == "connected"));
}
