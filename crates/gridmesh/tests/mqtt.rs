//! Interop: devices publish signed telemetry and slot readings with paho-mqtt (Python, its own
//! encoder from the documented format) through Mosquitto; the node's gateway verifies and
//! commits the telemetry, refuses replays, forgeries and broken payloads, relays the honest
//! reading to the ledger and refuses the one that claims more than its telemetry shows. Retained
//! junk larger than any telemetry (one message above the gateway's bound, one above its client's)
//! is dropped and counted and never stops ingest.

mod common;

use common::{
    get_json, gridmesh, interop_script, new_key, python, stdout_json, wait_for, GatewayNode,
    Mosquitto,
};
use gridmesh_client::client::Client;
use gridmesh_ledger::Keypair;
use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    stdout_json(&gridmesh(args))
}

#[test]
fn paho_devices_through_mosquitto_reach_the_ledger_and_liars_are_refused() {
    let (py, broker) = (python(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    let port = broker.port.to_string();
    let g = GatewayNode::start(dir.path(), &broker);
    let (url, owner_key, owner, faucet) = (g.url.clone(), &g.owner_key, &g.owner, &g.faucet);
    let (_, gateway) = new_key(dir.path(), "holder");
    let mut devices = Vec::new();
    for name in ["honest", "liar"] {
        let (device_key, device) = new_key(dir.path(), name);
        g.register_device(&device_key, "battery", "5", "street-1/house-1");
        devices.push((device_key, device));
    }
    let status = get_json(&format!("{url}/v1/status"));
    let chain = status["chain_id"].as_str().unwrap().to_string();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let slot = now_ms / 900_000 - 1; // ended, within its correction window

    let publish = |key: &str, inflate: u64, junk: &str| -> serde_json::Value {
        let out = Command::new(&py)
            .arg(interop_script("mqtt_device.py"))
            .args(["--port", &port, "--chain", &chain, "--key", key])
            .args(["--slot", &slot.to_string(), "--power-w", "2000"])
            .args(["--inflate-mwh", &inflate.to_string(), "--junk-bytes", junk])
            .output()
            .expect("run the paho device");
        assert!(
            out.status.success(),
            "mqtt_device.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // 200 kB retained junk is above the gateway's bound, 2 MB above its client's Maximum Packet
    // Size (MQTT 5: the broker drops it for the gateway). With MQTT 3.1.1 and a client that failed
    // on the first, ingest stopped for good: every reconnect got the retained message again.
    let honest = publish(&devices[0].0, 0, "200000,2000000");
    let liar = publish(&devices[1].0, 250_000, "");

    // 900 one-second samples each, in messages of 100: all committed; the replayed message, the
    // forged sample and the truncated payload refused by reason.
    wait_for("both devices' telemetry", || {
        get_json(&format!("{url}/v1/gateway"))["stats"]["samples"]["accepted"] == 1_800
    });
    wait_for(
        "the honest reading relayed and the inflated one refused",
        || {
            let g = get_json(&format!("{url}/v1/gateway"));
            g["stats"]["readings_relayed"] == 1
                && g["stats"]["readings_refused"]
                    ["register differs from the slot's last telemetry sample"]
                    == 1
        },
    );
    let stats = &get_json(&format!("{url}/v1/gateway"))["stats"];
    assert!(
        stats["dropped"]["oversized"].as_u64() >= Some(1),
        "the 200 kB junk is dropped and counted: {stats}"
    );
    assert_eq!(stats["samples"]["rejected"]["replay"], 200, "{stats}");
    assert_eq!(stats["samples"]["rejected"]["bad-signature"], 2, "{stats}");
    assert_eq!(stats["samples"]["rejected"]["malformed"], 2, "{stats}");
    // The same counters for Prometheus.
    let metrics = ureq::get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for line in [
        "gridmesh_gateway_connected 1",
        "gridmesh_gateway_samples_accepted_total 1800",
        "gridmesh_gateway_samples_rejected_total{reason=\"replay\"} 200",
        "gridmesh_gateway_samples_rejected_total{reason=\"bad-signature\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }

    // The honest reading is on the ledger with the commitment the Python device computed, and
    // the node's store recomputes the same root from what it kept.
    let device = &devices[0].1;
    let slot_arg = slot.to_string();
    let my_slot = || {
        run(&[
            "query", "slot", &slot_arg, "--key", owner_key, "--node", &url, "--json",
        ])
    };
    wait_for("the reading on the ledger", || {
        my_slot()["device_readings"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["device"] == device.as_str()))
    });
    let v = my_slot();
    let r = v["device_readings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device"] == device.as_str())
        .unwrap()
        .clone();
    assert_eq!(r["raw_root"], honest["root"]);
    assert_eq!(r["raw_samples"], 900);
    assert_eq!(
        r["energy_out_kwh"], "0.4995",
        "2 kW for a quarter hour (555 mWh a second)"
    );
    let c = get_json(&format!("{url}/v1/telemetry/{device}/{slot}"));
    assert_eq!((&c["root"], &c["samples"]), (&honest["root"], &900.into()));
    let p = get_json(&format!("{url}/v1/telemetry/{device}/{slot}/proof/899"));
    assert_eq!(p["out_register_mwh"], honest["register_mwh"]);
    assert!(v["device_readings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["device"] != liar["device"]));

    // The owner, signed in, sees on its home what each device said last: the gateway's latest
    // verified sample (the forged one, signed over other numbers, is not it).
    let client = Client::new(&url);
    let token = client
        .sign_in(&Keypair::load(std::path::Path::new(owner_key)).unwrap())
        .unwrap();
    let home = client.home(&owner.parse().unwrap(), &token, 96).unwrap();
    let now = home
        .devices
        .iter()
        .find(|d| d.device == *device)
        .and_then(|d| d.now.clone())
        .unwrap_or_else(|| panic!("{home:?}"));
    assert_eq!((now.power_w, now.time_ms), (2000, (slot + 1) * 900_000));
    assert_eq!(
        honest["register_mwh"], 499_500,
        "the device's register starts at 0"
    );
    assert_eq!(now.out_register_kwh, "0.4995");
    // The same from the command line; another account may not read the home.
    let v = run(&[
        "query", "home", "--key", owner_key, "--node", &url, "--json",
    ]);
    let cli_now = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == device.as_str())
        .map(|d| d["now"].clone());
    assert_eq!(cli_now, Some(serde_json::to_value(&now).unwrap()), "{v}");

    // The proof goes straight into a fraud report; against an honest reading it proves nothing
    // and is refused with the reason. The owner may not report its own device at all.
    let (reporter_key, reporter) = new_key(dir.path(), "reporter");
    let o = gridmesh(&[
        "query",
        "home",
        "--key",
        &reporter_key,
        "--owner",
        owner,
        "--node",
        &url,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("for its owner and whom the owner grants it"),
        "{err}"
    );
    common::transfer(&url, faucet, &reporter, "1");
    let proof_hex = p["proof_hex"].as_str().unwrap();
    let slot_arg = slot.to_string();
    for (key, needle) in [
        (&reporter_key, "consistent with the reading"),
        (owner_key, "cannot report its own device"),
    ] {
        let out = gridmesh(&[
            "tx",
            "report-fraud",
            "--device",
            device,
            "--slot",
            &slot_arg,
            "--proof-hex",
            proof_hex,
            "--key",
            key,
            "--node",
            &url,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{err}");
    }
    // Only the grid operator asks for flexibility.
    let out = gridmesh(&[
        "tx",
        "request-flex",
        "--slot",
        &(slot + 4).to_string(),
        "--area",
        "street-1",
        "--direction",
        "reduce",
        "--value-per-kwh",
        "0.5",
        "--key",
        owner_key,
        "--node",
        &url,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("grid operator"));
    // A community asset with two holders; the supply reconciles (bonds held, nothing minted yet).
    run(&[
        "tx",
        "create-asset",
        "--name",
        "street-1 battery",
        "--holder",
        &format!("{owner}=3"),
        "--holder",
        &format!("{gateway}=1"),
        "--key",
        &reporter_key,
        "--node",
        &url,
        "--json",
    ]);
    let s = run(&["query", "supply", "--node", &url, "--json"]);
    assert_eq!(s["reconciled"], true, "{s}");
    assert_eq!(s["device_bonds"], "20");
    assert_eq!(s["minted"], "0");
    g.node.terminate();
}
