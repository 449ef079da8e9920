//! Interop: the `ocpp` Python package as an OCPP 1.6J charge point against our central system
//! (`gridmesh device ocpp`). The charger takes current only and two periods per schedule: the
//! central system reads that first and fits the site limit and the plan to it; the effective
//! limit is the lower profile per interval; the transaction's energy registers reach a node's
//! gateway as signed samples through Mosquitto; the plan is cleared when the transaction stops.

mod common;

use common::{free_port, get_json, new_key, python, wait_for, GatewayNode, Mosquitto};
use std::process::{Command, Stdio};

#[test]
fn an_ocpp_charge_point_is_smart_charged_and_metered_onto_the_gateway() {
    let (py, broker) = (python(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    let g = GatewayNode::start(dir.path(), &broker);
    let (url, mqtt) = (g.url.clone(), g.mqtt.clone());
    let (charger_key, charger) = new_key(dir.path(), "charger");
    g.register_device(&charger_key, "ev-charger", "11", "street-1/house-2");

    let port = free_port();
    let cs = Command::new(common::BIN)
        .args(["device", "ocpp", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--charger",
            &format!("CP_1={charger_key}"),
            "--id-tag",
            "RFID-0042",
        ])
        .args([
            "--mqtt",
            &mqtt,
            "--site-limit-kw",
            "11",
            "--plan",
            "0:7.4,900:3.7,1800:11",
        ])
        .args(["--sessions", "1", "--json"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the central system");
    wait_for("the central system to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let out = Command::new(&py)
        .arg(common::interop_script("ocpp_charge_point.py"))
        .args([
            "--url",
            &format!("ws://127.0.0.1:{port}/ocpp/CP_1"),
            "--meter-values",
            "3",
        ])
        .output()
        .expect("run the charge point");
    assert!(
        out.status.success(),
        "ocpp_charge_point.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cs_out = cs.wait_with_output().unwrap();
    assert!(cs_out.status.success());
    let events: Vec<serde_json::Value> = serde_json::from_slice(&cs_out.stdout).unwrap();
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
