//! Interop: the node's OpenADR 3.1 VTN read by an OpenADR VEN we did not write
//! (grid-coordination's python-oa3-client on their openadr3 client), on a node whose grid
//! operator service envelopes every connection before gate closure. A home's VEN sees prices,
//! the flexibility requests and its own connection's envelope; an aggregator's sees no envelope
//! and gets 403 for the home's; reports, a webhook subscription, and every refusal (401, 403,
//! 400, 404, OAuth2's errors) as the standards say. A VEN removed by the operator loses its
//! token at once.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{gridmesh, new_key, python, stdout_json, wait_for, NodeProc};
use serde_json::Value;

fn run(args: &[&str]) -> Value {
    let out = gridmesh(args);
    assert!(
        out.status.success(),
        "gridmesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_json(&out)
}

fn get(url: &str) -> Value {
    ureq::get(url).call().unwrap().into_json().unwrap()
}

/// `gridmesh openadr ven add`: the VEN's credentials.
fn add_ven(data_dir: &str, name: &str, connection: Option<&str>) -> Value {
    let mut args = vec![
        "openadr",
        "ven",
        "add",
        "--data-dir",
        data_dir,
        "--name",
        name,
    ];
    if let Some(c) = connection {
        args.extend(["--connection", c]);
    }
    args.push("--json");
    run(&args)
}

/// Runs the VEN and returns what it saw.
fn ven(url: &str, creds: &Value, name: &str, foreign: &str, webhook: Option<u16>) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(common::interop_script("openadr_ven.py"))
        .args(["--url", &format!("{url}/openadr/3")])
        .args(["--client-id", creds["client_id"].as_str().unwrap()])
        .args(["--client-secret", creds["client_secret"].as_str().unwrap()])
        .args(["--name", name, "--foreign-event", foreign]);
    if let Some(p) = webhook {
        cmd.args(["--webhook-port", &p.to_string()]);
    }
    let out = cmd.output().expect("run the VEN");
    assert!(
        out.status.success(),
        "openadr_ven.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_openadr_3_ven_reads_prices_flexibility_and_only_its_own_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let (op_key, op) = new_key(dir.path(), "operator");
    let genesis = common::genesis_now(dir.path(), "openadr", &[&op], Some(&op), "");
    let feeder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/congestion/feeder.toml");
    let data = dir.path().join("data");
    let node = NodeProc::start(
        &data,
        &[
            "--genesis",
            genesis.to_str().unwrap(),
            "--time-scale",
            "600",
            "--grid-feeder",
            feeder.to_str().unwrap(),
            "--grid-operator-key",
            &op_key,
        ],
    );
    let url = node.url.clone();
    let data_dir = data.to_str().unwrap();

    // The operator registers a home's VEN for its connection, and an aggregator's.
    let home = add_ven(data_dir, "home-1", Some("street-1/home-1"));
    let aggregator = add_ven(data_dir, "aggregator", None);
    let dup = gridmesh(&[
        "openadr",
        "ven",
        "add",
        "--data-dir",
        data_dir,
        "--name",
        "home-1",
    ]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already registered"));

    // The envelopes of the next open slots (the service's transactions committed), then a
    // flexibility request from the same key.
    wait_for("the envelopes", || {
        let op = get(&format!("{url}/v1/grid"))["operator"].clone();
        op["enveloped_slots"].as_array().unwrap().iter().any(|s| {
            ureq::get(&format!(
                "{url}/v1/market/slots/{s}/envelope?location=street-1/home-1"
            ))
            .call()
            .is_ok()
        })
    });
    let open = get(&format!("{url}/v1/market"))["next_open_slot"]
        .as_u64()
        .unwrap();
    // The service signs with the same key: a nonce it holds pending is tried again.
    let slot = (open + 2).to_string();
    let flex = [
        "tx",
        "request-flex",
        "--slot",
        &slot,
        "--area",
        "street-1",
        "--direction",
        "reduce",
        "--value-per-kwh",
        "0.05",
        "--key",
        &op_key,
        "--node",
        &url,
        "--json",
    ];
    wait_for("the flexibility request to be taken", || {
        gridmesh(&flex).status.success()
    });
    wait_for("the flexibility request", || {
        let m = get(&format!("{url}/v1/market"));
        !m["flexibility_requests"].as_array().unwrap().is_empty()
    });

    let own = gridmesh_node::openadr::wire::envelope_event_id("street-1/home-1");
    let neighbour = gridmesh_node::openadr::wire::envelope_event_id("street-1/home-2");
    let hook = common::free_port();
    let h = ven(&url, &home, "home-1", &neighbour, Some(hook));
    eprintln!("the home's VEN saw: {h}");
    assert_eq!(h["ven_id"], home["id"]);
    assert_eq!(
        h["programs"],
        serde_json::json!([
            "gridmesh-envelopes",
            "gridmesh-flexibility",
            "gridmesh-prices"
        ])
    );
    for t in [
        "PRICE",
        "EXPORT_PRICE",
        "IMPORT_CAPACITY_LIMIT",
        "EXPORT_CAPACITY_LIMIT",
    ] {
        assert!(h["payload_types"].as_array().unwrap().contains(&t.into()));
    }
    // 96 price slots of 15 minutes from the slot running, at the genesis tariff.
    assert_eq!(h["price_intervals"], 96);
    assert_eq!(h["price_step_s"], 900);
    let market = get(&format!("{url}/v1/market"));
    let tariff: f64 = market["tariffs"][0]["retail_per_kwh"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(market["tariffs"].as_array().unwrap().len() == 1, "{market}");
    assert_eq!(h["first_price"]["PRICE"].as_f64().unwrap(), tariff);
    // Its own envelope, in kW, and no other.
    assert_eq!(h["envelope_events"], serde_json::json!([own]));
    assert_eq!(
        h["envelope_targets"],
        serde_json::json!(["street-1/home-1"])
    );
    assert_eq!(h["envelope_event_by_id"], own.as_str());
    // The first enveloped slot's limits are the ledger's energies per slot as power.
    let slot = h["envelope_first_start_s"].as_u64().unwrap() / 900;
    let first = get(&format!(
        "{url}/v1/market/slots/{slot}/envelope?location=street-1/home-1"
    ));
    for (payload, field) in [
        ("IMPORT_CAPACITY_LIMIT", "import_kwh"),
        ("EXPORT_CAPACITY_LIMIT", "export_kwh"),
    ] {
        let kwh: f64 = first[field].as_str().unwrap().parse().unwrap();
        let kw = h["envelope_first"][payload].as_f64().unwrap();
        assert!(
            (kw - 4.0 * kwh).abs() < 1e-9,
            "{payload}: {kw} kW, {kwh} kWh a slot"
        );
    }
    assert_eq!(
        h["flexibility"],
        serde_json::json!([{"GRIDMESH_FLEX_REDUCE_PRICE": 0.05}])
    );
    // Its report, and what it may not do.
    assert_eq!(h["report_status"], 201);
    assert_eq!(h["reports"], serde_json::json!([["prices", "home-1"]]));
    assert_eq!(h["foreign_event_status"], 403);
    assert_eq!(h["write_event_status"], 403);
    assert_eq!(h["bad_report_status"], 400);
    assert_eq!(h["unknown_event_report_status"], 400);
    assert_eq!(h["unknown_program_status"], 404);
    assert_eq!(h["bad_subscription_status"], 400);
    assert_eq!(h["unknown_program_subscription_status"], 400);
    assert_eq!(h["reports_after_refusals"], 1);
    assert_eq!(h["subscriptions_after_refusals"], 0);
    assert_eq!(h["made_up_token_status"], 401);
    assert_eq!(h["no_token_status"], 401);
    assert_eq!(
        h["wrong_secret"],
        serde_json::json!([401, "invalid_client"])
    );
    assert_eq!(
        h["password_grant"],
        serde_json::json!([400, "unsupported_grant_type"])
    );
    assert_eq!(h["basic_auth_status"], 200);
    // Its subscription's first notification: the price event, with the token it gave.
    assert_eq!(h["subscription_status"], 201);
    assert_eq!(h["subscriptions"], 1);
    assert_eq!(
        h["notification"],
        serde_json::json!({"auth": "Bearer hook-secret", "operation": "POST",
            "object_type": "EVENT", "event_id": "prices"})
    );

    // The aggregator sees no envelope, and is refused the home's.
    let a = ven(&url, &aggregator, "aggregator", &own, None);
    assert_eq!(a["envelope_events"], serde_json::json!([]));
    assert_eq!(a["foreign_event_status"], 403);
    assert_eq!(a["reports"], serde_json::json!([["prices", "aggregator"]]));

    // A VEN the operator removes loses its token at once.
    let token: Value = ureq::post(&format!("{url}/openadr/3/auth/token"))
        .send_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", home["client_id"].as_str().unwrap()),
            ("client_secret", home["client_secret"].as_str().unwrap()),
        ])
        .unwrap()
        .into_json()
        .unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    // The status and content type of the programs with that token.
    let programs = || match ureq::get(&format!("{url}/openadr/3/programs"))
        .set("Authorization", &bearer)
        .call()
    {
        Ok(r) => (r.status(), r.content_type().to_string(), Value::Null),
        Err(ureq::Error::Status(code, r)) => (
            code,
            r.content_type().to_string(),
            r.into_json().unwrap_or(Value::Null),
        ),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(programs().0, 200);
    run(&[
        "openadr",
        "ven",
        "remove",
        "--data-dir",
        data_dir,
        "home-1",
        "--json",
    ]);
    let (status, content_type, problem) = programs();
    assert_eq!(status, 401, "a removed VEN's token still works");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["status"], 401);
    let list = run(&["openadr", "ven", "list", "--data-dir", data_dir, "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "aggregator");
    node.terminate();
}
