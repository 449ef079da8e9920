//! Interop: a SunSpec hybrid inverter served by pymodbus, its register map laid out from
//! pysunspec2's model definitions. Our tokio-modbus client walks the map, reads identity, power,
//! energy registers and state of charge with their scale factors, sets a power limit and storage
//! rates that revert by themselves when not refreshed, and the device adapter publishes signed
//! telemetry through Mosquitto into a node's gateway.

mod common;

use common::{
    free_port, get_json, gridmesh, new_key, stdout_json, wait_for, GatewayNode, Killed, Mosquitto,
};

fn start_device(port: u16) -> Killed {
    let args = ["--port", &port.to_string(), "--w", "3000", "--wh", "123456"].map(String::from);
    common::start_ready_peer("sunspec_server.py", &args, "the pymodbus SunSpec device")
}

fn once(port: u16, key: &str, extra: &[&str]) -> serde_json::Value {
    let modbus = format!("127.0.0.1:{port}");
    let mut args = vec![
        "device",
        "sunspec",
        "--modbus",
        &modbus,
        "--device-key",
        key,
        "--once",
        "--json",
    ];
    args.extend_from_slice(extra);
    stdout_json(&gridmesh(&args))
}

#[test]
fn a_pymodbus_sunspec_inverter_is_read_limited_with_reversion_and_reaches_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (key, device) = new_key(dir.path(), "inverter");
    let port = free_port();
    let _dev = start_device(port);

    // Discovery and measurement, scale factors applied (WH in 10 Wh units, SoC in 0.1 %).
    let v = once(port, &key, &[]);
    let ids: Vec<u64> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 103, 123, 124, 802, 203]);
    assert_eq!(v["base"], 40000);
    assert_eq!(v["identity"]["manufacturer"], "gridmesh-interop");
    assert_eq!(v["identity"]["serial"], "SN-0001");
    let m = &v["measurement"];
    assert_eq!(m["power_w"], 3000);
    assert!((123_450_000..123_500_000).contains(&m["out_register_mwh"].as_u64().unwrap()));
    assert!(m["in_register_mwh"].as_u64().unwrap() >= 5_000_000);
    assert!((m["soc_pct"].as_f64().unwrap() - 50.0).abs() < 1.0);
    assert!(m["power_limit_pct"].is_null());

    // A 40 % limit and a charge limit with a 2 s reversion timeout: in force, then gone by
    // themselves once nobody rewrites them (the node died).
    let written = std::time::Instant::now();
    let v = once(
        port,
        &key,
        &["--limit-pct", "40", "--charge-pct", "50", "--revert-s", "2"],
    );
    assert_eq!(v["measurement"]["power_limit_pct"], 40.0);
    assert_eq!(v["measurement"]["storage_control"], 1);
    wait_for("the device to follow the limit", || {
        once(port, &key, &[])["measurement"]["power_w"] == 2000
    });
    // Nobody rewrites the controls: they lapse by themselves, after their timeout and not before.
    wait_for("the controls to revert by themselves", || {
        once(port, &key, &[])["measurement"]["power_limit_pct"].is_null()
    });
    assert!(
        written.elapsed() >= std::time::Duration::from_millis(1_900),
        "reverted after {:?}, before the 2 s timeout",
        written.elapsed()
    );
    wait_for("the device to run free again", || {
        once(port, &key, &[])["measurement"]["power_w"] == 3000
    });
    let m = &once(port, &key, &[])["measurement"];
    assert!(m["power_limit_pct"].is_null(), "{m}");
    assert_eq!(m["storage_control"], 0);
    assert_eq!(m["power_w"], 3000);

    // An unreachable device is a clear error.
    let out = gridmesh(&[
        "device",
        "sunspec",
        "--modbus",
        &format!("127.0.0.1:{}", free_port()),
        "--device-key",
        &key,
        "--once",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot reach the Modbus device"),
        "{err}"
    );

    // The adapter: signed samples through Mosquitto into a node's gateway.
    let broker = Mosquitto::start();
    let g = GatewayNode::start(dir.path(), &broker);
    let (url, mqtt) = (g.url.clone(), g.mqtt.clone());
    g.register_device(&key, "pv", "5", "street-1/house-9");
    let run = stdout_json(&gridmesh(&[
        "device",
        "sunspec",
        "--modbus",
        &format!("127.0.0.1:{port}"),
        "--device-key",
        &key,
        "--mqtt",
        &mqtt,
        "--interval-ms",
        "300",
        "--polls",
        "8",
        "--limit-pct",
        "80",
        "--json",
    ]));
    assert_eq!(run["samples_published"], 8, "{run}");
    assert_eq!(run["failures"], 0);
    wait_for("the adapter's samples in the node's store", || {
        g.accepted() == 8
    });
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let slot = (now_ms - 1) / 900_000;
    let c = get_json(&format!("{url}/v1/telemetry/{device}/{slot}"));
    let prev = get_json(&format!("{url}/v1/telemetry/{device}/{}", slot - 1));
    let stored = c["samples"].as_u64().unwrap() + prev["samples"].as_u64().unwrap();
    assert_eq!(stored, 8, "{c} {prev}");
    g.node.terminate();
}
