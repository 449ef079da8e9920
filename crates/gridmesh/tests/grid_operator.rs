//! The grid operator's service in a real node (`gridmesh node --grid-feeder --grid-operator-key`):
//! it submits every connection point's envelope before gate closure, so a home's bid clears only
//! up to what the transformer can carry; PCC reports island and reconnect the microgrid, each
//! transition a ledger event, and a slot cleared while islanded uses island rules.

mod common;

use std::path::PathBuf;

use common::{gridmesh, new_key, stdout_json, wait_for, NodeProc};

fn run(args: &[&str]) -> serde_json::Value {
    stdout_json(&gridmesh(args))
}

/// Runs the CLI and asserts it succeeded.
fn run_plain(args: &[&str]) {
    let out = gridmesh(args);
    assert!(
        out.status.success(),
        "gridmesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(url: &str, path: &str) -> serde_json::Value {
    ureq::get(&format!("{url}{path}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

/// Waits until `slot` is cleared and returns its view.
fn cleared(url: &str, slot: &str) -> serde_json::Value {
    wait_for(&format!("slot {slot} to clear"), || {
        let v = run(&["query", "slot", slot, "--node", url, "--json"]);
        v["status"] != "open" && v["status"] != "closed"
    });
    run(&["query", "slot", slot, "--node", url, "--json"])
}

/// Waits until the service has submitted at least `envelopes` envelopes and enveloped a slot
/// after the next open one; that slot.
fn first_enveloped_slot(url: &str, envelopes: u64) -> u64 {
    let mut slot = 0u64;
    wait_for("envelopes", || {
        let op = get(url, "/v1/grid")["operator"].clone();
        let open = get(url, "/v1/market")["next_open_slot"].as_u64().unwrap();
        match op["enveloped_slots"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_u64())
            .find(|&s| s > open)
        {
            Some(s) if op["envelopes_submitted"].as_u64().unwrap() >= envelopes => {
                slot = s;
                true
            }
            _ => false,
        }
    });
    slot
}

/// An EV's bid for 2.75 kWh (11 kW for the slot) at `location` in `slot`: once cleared, the
/// slot's view (one connection trimmed to its envelope, checked) and what the utility served.
fn bid_for_an_ev(url: &str, slot: u64, location: &str, key: &str) -> (serde_json::Value, f64) {
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
        location,
        "--key",
        key,
        "--node",
        url,
        "--json",
    ]);
    let v = cleared(url, &s);
    assert_eq!(v["envelopes"], 1, "{v}");
    // The utility served only the envelope: read it from the slot's market report.
    let served = v["utility"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["energy_kwh"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    (v, served)
}

/// Posts a PCC report, the status code and the error code.
fn post_pcc(url: &str, report: &serde_json::Value) -> (u16, String) {
    match ureq::post(&format!("{url}/v1/grid/pcc")).send_json(report) {
        Ok(r) => (r.status(), String::new()),
        Err(ureq::Error::Status(code, r)) => {
            let v: serde_json::Value = r.into_json().unwrap_or_default();
            (code, v["error"].as_str().unwrap_or_default().to_string())
        }
        Err(e) => panic!("{e}"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A report of `available` signed with the key file `key` at `at_ms`.
fn signed_report(url: &str, key: &str, available: bool, at_ms: u64) -> serde_json::Value {
    let key = gridmesh_ledger::Keypair::load(std::path::Path::new(key)).unwrap();
    let chain = get(url, "/v1/status")["chain_id"]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::to_value(gridmesh_api::chain::PccReport::signed(
        &key, &chain, available, at_ms,
    ))
    .unwrap()
}

/// The PCC meter's report, signed now with the key file `key`: the status code.
fn pcc(url: &str, key: &str, available: bool) -> u16 {
    post_pcc(url, &signed_report(url, key, available, now_ms())).0
}

fn genesis(
    dir: &std::path::Path,
    accounts: &[&str],
    operator: &str,
    market_extra: &str,
) -> PathBuf {
    common::genesis_now(dir, "two-streets", accounts, Some(operator), market_extra)
}

/// A node at 600x time running the grid operator service on the congestion example's feeder.
fn operator_node(
    dir: &std::path::Path,
    genesis: &std::path::Path,
    op_key: &str,
    pcc_timeout_s: &str,
    empty_blocks: bool,
) -> NodeProc {
    let feeder = common::congestion_feeder();
    let mut args = vec![
        "--genesis",
        genesis.to_str().unwrap(),
        "--time-scale",
        "600",
        "--grid-feeder",
        feeder.to_str().unwrap(),
        "--grid-operator-key",
        op_key,
        "--pcc-timeout-s",
        pcc_timeout_s,
        "--resync-s",
        "300",
    ];
    if empty_blocks {
        args.push("--empty-blocks");
    }
    NodeProc::start(&dir.join("data"), &args)
}

#[test]
fn the_grid_operator_service_envelopes_slots_and_islands_the_microgrid() {
    let dir = tempfile::tempdir().unwrap();
    let (op_key, op) = new_key(dir.path(), "operator");
    let (home_key, home) = new_key(dir.path(), "home");
    let (pv_key, pv) = new_key(dir.path(), "pv");
    let genesis = genesis(
        dir.path(),
        &[&home, &pv, &op],
        &op,
        "island_price_cap_per_kwh = \"0.50\"\n",
    );
    let node = operator_node(dir.path(), &genesis, &op_key, "86400", false);
    let url = node.url.clone();
    // The home declares its meter; the seller's battery has its own key (only such devices
    // sell).
    let (battery_key, _) = new_key(dir.path(), "battery");
    for (k, kind, kw, device) in [
        (&home_key, "meter", "11", None),
        (&pv_key, "battery", "10", Some(&battery_key)),
    ] {
        let mut args = vec![
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
        ];
        if let Some(d) = device {
            args.extend([
                "--device-key",
                d,
                "--location",
                "street-1/home-4",
                "--latitude",
                "47.37",
                "--longitude",
                "8.54",
            ]);
        }
        run(&args);
    }
    // The service envelopes the next open slots: 20 connection points each.
    let slot = first_enveloped_slot(&url, 20);
    assert_eq!(get(&url, "/v1/grid")["operator"]["connection_points"], 20);
    // An EV wants 2.75 kWh (11 kW for the slot); the envelope allows about 0.95 kWh.
    let (v, served) = bid_for_an_ev(&url, slot, "street-1/home-1", &home_key);
    assert_eq!(v["island"], false);
    assert!(served > 0.5 && served < 1.0, "served {served} kWh: {v}");

    // A web page elsewhere makes the browser report an outage (a text/plain body from a foreign
    // origin needs no preflight): refused, and the grid stays connected (issue 19, finding 6).
    let forged = ureq::post(&format!("{url}/v1/grid/pcc"))
        .set("Origin", "http://evil.example")
        .set("Content-Type", "text/plain")
        .send_string("{\"grid_available\": false}");
    assert!(
        matches!(forged, Err(ureq::Error::Status(403, _))),
        "{forged:?}"
    );
    let plain = ureq::post(&format!("{url}/v1/grid/pcc"))
        .set("Content-Type", "text/plain")
        .send_string("{\"grid_available\": false}");
    assert!(
        matches!(plain, Err(ureq::Error::Status(415, _))),
        "{plain:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(get(&url, "/v1/grid")["mode"], "grid-connected");

    // Reports need the PCC meter's or the grid operator's key (issue 19, finding 6): unsigned,
    // signed by a member, altered after signing, replayed or out of time, they are refused.
    let (code, _) = post_pcc(&url, &serde_json::json!({ "grid_available": false }));
    assert_eq!(code, 400);
    let (code, error) = post_pcc(&url, &signed_report(&url, &home_key, false, now_ms()));
    assert_eq!((code, error.as_str()), (403, "not_authorised"));
    let mut altered = signed_report(&url, &op_key, true, now_ms());
    altered["grid_available"] = serde_json::json!(false);
    let (code, error) = post_pcc(&url, &altered);
    assert_eq!((code, error.as_str()), (401, "bad_signature"));
    let stale = signed_report(&url, &op_key, false, now_ms() - 10 * 60_000);
    assert_eq!(post_pcc(&url, &stale), (409, "out_of_time".to_string()));
    let healthy = signed_report(&url, &op_key, true, now_ms());
    assert_eq!(post_pcc(&url, &healthy).0, 202);
    assert_eq!(post_pcc(&url, &healthy), (409, "replayed".to_string()));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(get(&url, "/v1/grid")["mode"], "grid-connected");

    // The PCC meter reports an outage (`gridmesh grid pcc`, signed with the grid operator's key):
    // islanded, recorded on the ledger.
    run_plain(&[
        "grid",
        "pcc",
        "--key",
        &op_key,
        "--available",
        "false",
        "--node",
        &url,
    ]);
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
    let v = cleared(&url, &island_slot);
    assert_eq!(v["island"], true, "{v}");
    assert_eq!(v["clearing_price_per_kwh"], "0.5", "{v}");
    assert!(v["utility"].as_array().unwrap().is_empty(), "{v}");
    // The grid is back: resynchronising, then reconnected after 10 minutes of chain time.
    wait_for("reconnected", || {
        assert_eq!(pcc(&url, &op_key, true), 202);
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
    let r = ureq::post(&format!("{url}/v1/grid/pcc"))
        .set("Content-Type", "application/json")
        .send_string("{\"grid\": 1}");
    assert!(matches!(r, Err(ureq::Error::Status(400, _))));
    let op = &get(&url, "/v1/grid")["operator"];
    assert!(op["last_error"].is_null(), "{op}");
}

/// A live node that stops hearing from the PCC meter islands the microgrid after the timeout
/// (chain time), and a report that the grid is healthy brings it back.
#[test]
fn a_silent_pcc_meter_islands_the_microgrid() {
    let dir = tempfile::tempdir().unwrap();
    let (op_key, op) = new_key(dir.path(), "operator");
    let genesis = genesis(dir.path(), &[&op], &op, "");
    let node = operator_node(dir.path(), &genesis, &op_key, "600", true);
    let url = node.url.clone();
    // No report at all: 10 minutes of chain time (1 s here) later the node islands.
    wait_for("islanded by silence", || {
        get(&url, "/v1/grid")["mode"] == "islanded"
    });
    // The PCC meter reports with its own key once the grid operator has registered it (a meter
    // with its own key, bonded); before, its key is not authorised.
    let (meter_key, _) = new_key(dir.path(), "pcc-meter");
    let report = signed_report(&url, &meter_key, true, now_ms());
    assert_eq!(post_pcc(&url, &report).0, 403);
    // The service signs envelopes with the same key: a nonce it holds pending is tried again.
    let register = [
        "tx",
        "register-device",
        "--kind",
        "meter",
        "--capacity-kw",
        "100",
        "--device-key",
        &meter_key,
        "--latitude",
        "52.0",
        "--longitude",
        "5.0",
        "--key",
        &op_key,
        "--node",
        &url,
        "--json",
    ];
    wait_for("the PCC meter's registration", || {
        let out = common::gridmesh(&register);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("nonce_in_use"),
            "{err}"
        );
        out.status.success()
    });
    wait_for("reconnected", || {
        assert_eq!(pcc(&url, &meter_key, true), 202);
        get(&url, "/v1/grid")["mode"] == "grid-connected"
    });
    // A node without the service refuses PCC reports by name.
    let plain = NodeProc::start(&dir.path().join("plain"), &[]);
    assert_eq!(pcc(&plain.url, &op_key, false), 409);
}

/// An unbalanced OpenDSS feeder (the IEEE European LV feeder) under the same service: every
/// single-phase home gets its envelope on its own phase before gate closure, and a home's bid
/// clears only up to it.
#[test]
fn an_opendss_feeder_envelopes_each_home_on_its_phase() {
    let dir = tempfile::tempdir().unwrap();
    let (op_key, op) = new_key(dir.path(), "operator");
    let (home_key, home) = new_key(dir.path(), "home");
    let genesis = genesis(dir.path(), &[&home, &op], &op, "");
    let feeder = gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss");
    // The service configured in the node's config file (issue 24: every option has its key),
    // the key's path relative to the file.
    assert!(op_key.ends_with("operator.key"));
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "time_scale = 600\n[grid_operator]\nfeeder = {:?}\nkey = \"operator.key\"\npcc_timeout_s = 86400\n",
            feeder.to_str().unwrap()
        ),
    )
    .unwrap();
    let node = NodeProc::start(
        &dir.path().join("data"),
        &[
            "--genesis",
            genesis.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let url = node.url.clone();
    common::register_meter(&url, &home_key);
    let slot = first_enveloped_slot(&url, 55);
    let op = get(&url, "/v1/grid")["operator"].clone();
    assert_eq!(op["connection_points"], 55, "{op}");
    assert_eq!(op["feeder"], "lvtest", "{op}");
    assert!(op["last_error"].is_null(), "{op}");
    // Load 1 (bus 34, phase 1) may take about 3.2 kW more: 0.8 kWh of the 2.75 it bids for.
    let (v, served) = bid_for_an_ev(&url, slot, "load1", &home_key);
    assert!(served > 0.5 && served < 1.0, "served {served} kWh: {v}");
}
