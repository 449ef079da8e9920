//! The grid operator's service in a real node (`gridmesh node --grid-feeder --grid-operator-key`):
//! it submits every connection point's envelope before gate closure, so a home's bid clears only
//! up to what the transformer can carry; PCC reports island and reconnect the microgrid, each
//! transition a ledger event, and a slot cleared while islanded uses island rules.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{gridmesh, stdout_json, NodeProc};

fn run(args: &[&str]) -> serde_json::Value {
    stdout_json(&gridmesh(args))
}

fn get(url: &str, path: &str) -> serde_json::Value {
    ureq::get(&format!("{url}{path}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pcc(url: &str, available: bool) -> u16 {
    match ureq::post(&format!("{url}/v1/grid/pcc"))
        .send_json(serde_json::json!({ "grid_available": available }))
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_grid_operator_service_envelopes_slots_and_islands_the_microgrid() {
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        let path = dir.path().join(format!("{name}.key"));
        let out = gridmesh(&["keys", "new", "--out", path.to_str().unwrap()]);
        assert!(out.status.success());
        (
            path.display().to_string(),
            String::from_utf8(out.stdout).unwrap().trim().to_string(),
        )
    };
    let (op_key, op) = key("operator");
    let (home_key, home) = key("home");
    let (pv_key, pv) = key("pv");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        format!(
            "chain_id = \"two-streets\"\ntimestamp_ms = {now_ms}\n\
             [[accounts]]\naddress = \"{home}\"\nbalance = \"100\"\n\
             [[accounts]]\naddress = \"{pv}\"\nbalance = \"100\"\n\
             [[accounts]]\naddress = \"{op}\"\nbalance = \"1\"\n\
             [market]\ngrid_operator = \"{op}\"\nisland_price_cap_per_kwh = \"0.50\"\n"
        ),
    )
    .unwrap();
    let feeder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/congestion/feeder.toml");
    let node = NodeProc::start(
        &dir.path().join("data"),
        &[
            "--genesis",
            genesis.to_str().unwrap(),
            "--time-scale",
            "600",
            "--grid-feeder",
            feeder.to_str().unwrap(),
            "--grid-operator-key",
            &op_key,
            "--pcc-timeout-s",
            "86400",
            "--resync-s",
            "600",
        ],
    );
    let url = node.url.clone();
    for (k, kind, kw) in [(&home_key, "meter", "11"), (&pv_key, "battery", "10")] {
        run(&[
            "tx",
            "register-device",
            "--kind",
            kind,
            "--capacity-kw",
            kw,
            "--key",
            k,
            "--node",
            &url,
            "--json",
        ]);
    }
    // The service envelopes the next open slots: 20 connection points each.
    let mut slot = 0u64;
    wait_for("envelopes", || {
        let g = get(&url, "/v1/grid");
        let op = &g["operator"];
        let market = get(&url, "/v1/market");
        let open = market["next_open_slot"].as_u64().unwrap();
        match op["enveloped_slots"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_u64())
            .find(|&s| s > open)
        {
            Some(s) if op["envelopes_submitted"].as_u64().unwrap() >= 20 => {
                slot = s;
                true
            }
            _ => false,
        }
    });
    assert_eq!(get(&url, "/v1/grid")["operator"]["connection_points"], 20);
    // An EV wants 2.75 kWh (11 kW for the slot); the envelope allows about 0.95 kWh.
    let s = slot.to_string();
    run(&[
        "tx",
        "order",
        "--slot",
        &s,
        "--side",
        "bid",
        "--energy-kwh",
        "2.75",
        "--price",
        "0.40",
        "--location",
        "street-1/home-1",
        "--key",
        &home_key,
        "--node",
        &url,
        "--json",
    ]);
    wait_for("the slot to clear", || {
        let v = run(&["query", "slot", &s, "--node", &url, "--json"]);
        v["status"] != "open" && v["status"] != "closed"
    });
    let v = run(&["query", "slot", &s, "--node", &url, "--json"]);
    assert_eq!(v["envelopes"], 1, "{v}");
    assert_eq!(v["island"], false);
    // The utility served only the envelope: read it from the slot's market report.
    let utility = v["utility"].as_array().unwrap();
    let served: f64 = utility
        .iter()
        .map(|u| u["energy_kwh"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(served > 0.5 && served < 1.0, "served {served} kWh: {v}");

    // The PCC meter reports an outage: islanded, recorded on the ledger.
    assert_eq!(pcc(&url, false), 202);
    wait_for("islanded", || get(&url, "/v1/grid")["mode"] == "islanded");
    let g = get(&url, "/v1/grid");
    assert_eq!(g["events"][0]["event"], "islanded");
    // A slot whose gate closes while islanded clears without the utility, at most at the cap.
    let market = get(&url, "/v1/market");
    let island_slot = (market["next_open_slot"].as_u64().unwrap() + 1).to_string();
    run(&[
        "tx",
        "order",
        "--slot",
        &island_slot,
        "--side",
        "ask",
        "--energy-kwh",
        "0.5",
        "--price",
        "0.10",
        "--location",
        "street-1/home-4",
        "--key",
        &pv_key,
        "--node",
        &url,
        "--json",
    ]);
    run(&[
        "tx",
        "order",
        "--slot",
        &island_slot,
        "--side",
        "bid",
        "--energy-kwh",
        "0.8",
        "--price",
        "2.00",
        "--location",
        "street-1/home-1",
        "--key",
        &home_key,
        "--node",
        &url,
        "--json",
    ]);
    wait_for("the island slot to clear", || {
        let v = run(&["query", "slot", &island_slot, "--node", &url, "--json"]);
        v["status"] != "open" && v["status"] != "closed"
    });
    let v = run(&["query", "slot", &island_slot, "--node", &url, "--json"]);
    assert_eq!(v["island"], true, "{v}");
    assert_eq!(v["clearing_price_per_kwh"], "0.5", "{v}");
    assert!(v["utility"].as_array().unwrap().is_empty(), "{v}");
    // The grid is back: resynchronising, then reconnected after 10 minutes of chain time.
    wait_for("reconnected", || {
        assert_eq!(pcc(&url, true), 202);
        get(&url, "/v1/grid")["mode"] == "grid-connected"
    });
    let events: Vec<String> = get(&url, "/v1/grid")["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["islanded", "resynchronising", "reconnected"]);
    // Bad reports are refused with a reason.
    let r = ureq::post(&format!("{url}/v1/grid/pcc")).send_string("{\"grid\": 1}");
    assert!(matches!(r, Err(ureq::Error::Status(400, _))));
    assert!(get(&url, "/v1/grid")["operator"]["last_error"].is_null());
}

/// A live node that stops hearing from the PCC meter islands the microgrid after the timeout
/// (chain time), and a report that the grid is healthy brings it back.
#[test]
fn a_silent_pcc_meter_islands_the_microgrid() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("operator.key");
    let op = String::from_utf8(gridmesh(&["keys", "new", "--out", key.to_str().unwrap()]).stdout)
        .unwrap()
        .trim()
        .to_string();
    let genesis = dir.path().join("genesis.toml");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::fs::write(
        &genesis,
        format!(
            "chain_id = \"quiet-meter\"\ntimestamp_ms = {now_ms}\n[[accounts]]\naddress = \"{op}\"\nbalance = \"1\"\n[market]\ngrid_operator = \"{op}\"\n"
        ),
    )
    .unwrap();
    let feeder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/congestion/feeder.toml");
    let node = NodeProc::start(
        &dir.path().join("data"),
        &[
            "--genesis",
            genesis.to_str().unwrap(),
            "--time-scale",
            "600",
            "--empty-blocks",
            "--grid-feeder",
            feeder.to_str().unwrap(),
            "--grid-operator-key",
            key.to_str().unwrap(),
            "--pcc-timeout-s",
            "600",
            "--resync-s",
            "300",
        ],
    );
    let url = node.url.clone();
    // No report at all: 10 minutes of chain time (1 s here) later the node islands.
    wait_for("islanded by silence", || {
        get(&url, "/v1/grid")["mode"] == "islanded"
    });
    wait_for("reconnected", || {
        assert_eq!(pcc(&url, true), 202);
        get(&url, "/v1/grid")["mode"] == "grid-connected"
    });
    // A node without the service refuses PCC reports by name.
    let plain = NodeProc::start(&dir.path().join("plain"), &[]);
    assert_eq!(pcc(&plain.url, false), 409);
}
