//! Interop: the node's OpenADR 3.1 VTN read by an OpenADR VEN we did not write
//! (grid-coordination's python-oa3-client on their openadr3 client), on a node whose grid
//! operator service envelopes every connection before gate closure. A home's VEN sees prices,
//! the flexibility requests and its own connection's envelope; an aggregator's sees no envelope
//! and gets 403 for the home's; reports, a webhook subscription, and every refusal (401, 403,
//! 400, 404, OAuth2's errors) as the standards say. A VEN removed by the operator loses its
//! token at once.
//!
//! And the other way: the node as a VEN of its DSO's VTN, OpenLEADR's `openleadr-vtn` on
//! PostgreSQL. An event posted there limits the community's import and prices a slot: that
//! slot's envelopes add up to the limit, its tariff is the DSO's price and clearing serves the
//! home no more than its share; once the slot settles, the community's metered usage goes back
//! as a report on the event.

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
fn add_ven(data_dir: &str, name: &str, connection: Option<&str>, device: Option<&str>) -> Value {
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
    if let Some(d) = device {
        args.extend(["--device-key", d]);
    }
    args.push("--json");
    run(&args)
}

/// Runs the VEN and returns what it saw.
fn ven(
    url: &str,
    creds: &Value,
    name: &str,
    foreign: &str,
    webhook: Option<u16>,
    usage_start: Option<&str>,
) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(common::interop_script("openadr_ven.py"))
        .args(["--url", &format!("{url}/openadr/3")])
        .args(["--client-id", creds["client_id"].as_str().unwrap()])
        .args(["--client-secret", creds["client_secret"].as_str().unwrap()])
        .args(["--name", name, "--foreign-event", foreign]);
    if let Some(p) = webhook {
        cmd.args(["--webhook-port", &p.to_string()]);
    }
    if let Some(start) = usage_start {
        cmd.args(["--usage-start", start]);
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
    let (owner_key, owner) = new_key(dir.path(), "owner");
    // Four hours to send a slot's readings (24 s at 600x): time for the VEN's report.
    let genesis = common::genesis_now(
        dir.path(),
        "openadr",
        &[&op, &owner],
        Some(&op),
        "correction_window_minutes = 240\n",
    );
    let feeder = common::congestion_feeder();
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
            // A block a second: the chain's clock runs on, so slots settle.
            "--empty-blocks",
        ],
    );
    let url = node.url.clone();
    let data_dir = data.to_str().unwrap();

    // The home's meter has its own key, with a token for the pool's deposit.
    let (meter_key, meter) = new_key(dir.path(), "meter");
    common::register_keyed_device_at(
        &url,
        &owner_key,
        &meter_key,
        "meter",
        "11",
        "street-1/home-1",
        ("47.37", "8.54"),
    );
    common::transfer(&url, &owner_key, &meter, "1");
    // The operator registers a home's VEN for its connection, with its meter, and an
    // aggregator's.
    let home = add_ven(
        data_dir,
        "home-1",
        Some("street-1/home-1"),
        Some(&meter_key),
    );
    assert_eq!(home["device"], meter.as_str());
    let aggregator = add_ven(data_dir, "aggregator", None, None);
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
    // The two slots before the head's have ended: the home's VEN reports its meter's usage.
    let head_slot = get(&format!("{url}/v1/status"))["timestamp_ms"]
        .as_u64()
        .unwrap()
        / 900_000;
    let usage_start = gridmesh_node::openadr::wire::rfc3339((head_slot - 2) * 900_000);
    let h = ven(
        &url,
        &home,
        "home-1",
        &neighbour,
        Some(hook),
        Some(&usage_start),
    );
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
    assert_eq!(h["usage_report_status"], 201);
    assert_eq!(h["reports_after_refusals"], 2);
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
    let a = ven(&url, &aggregator, "aggregator", &own, None, None);
    assert_eq!(a["envelope_events"], serde_json::json!([]));
    assert_eq!(a["foreign_event_status"], 403);
    assert_eq!(a["reports"], serde_json::json!([["prices", "aggregator"]]));

    // The home VEN's usage became its meter's readings, signed by the meter's key the node keeps:
    // 0.42 kWh taken, then 0.25 kWh given. Once the slots settle the ledger accepts both (its
    // register went on from one to the next; a register that jumps would be held).
    let meter_readings = || {
        let home = run(&[
            "query", "home", "--key", &owner_key, "--node", &url, "--json",
        ]);
        home["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device"] == meter.as_str())
            .cloned()
            .unwrap()
    };
    wait_for("the meter's readings", || {
        let d = meter_readings();
        d["readings_pending"].as_u64().unwrap() + d["readings_accepted"].as_u64().unwrap() == 2
    });
    wait_for("the meter's readings to settle", || {
        meter_readings()["readings_accepted"] == 2
    });
    assert_eq!(meter_readings()["held"], serde_json::json!([]));

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

/// OpenLEADR's VTN (`openleadr-vtn`, built by `./scripts/setup-peers`) on its own PostgreSQL,
/// run by `scripts/interop/openleadr_vtn.py`: the DSO's side. Stopped when dropped.
struct UpstreamVtn {
    child: std::process::Child,
    url: String,
    bl_token: String,
    ven: Value,
}

impl UpstreamVtn {
    fn start(dir: &std::path::Path) -> UpstreamVtn {
        use std::io::BufRead;
        let bin = std::env::var_os("GRIDMESH_OPENLEADR_VTN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../.tools/openleadr-vtn-0.2.3/bin/openleadr-vtn")
            });
        assert!(
            bin.exists(),
            "no openleadr-vtn at {}: run ./scripts/setup-peers",
            bin.display()
        );
        let work = dir.join("vtn");
        std::fs::create_dir_all(&work).unwrap();
        let mut child = Command::new(python())
            .arg(common::interop_script("openleadr_vtn.py"))
            .args(["--vtn", bin.to_str().unwrap()])
            .args(["--workdir", work.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start openleadr_vtn.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the upstream VTN did not start ({e}): {line:?}"));
        let url = started["url"].as_str().unwrap().to_string();
        let token: Value = ureq::post(&format!("{url}/auth/token"))
            .send_form(&[
                ("grant_type", "client_credentials"),
                ("client_id", started["bl"]["client_id"].as_str().unwrap()),
                (
                    "client_secret",
                    started["bl"]["client_secret"].as_str().unwrap(),
                ),
            ])
            .unwrap()
            .into_json()
            .unwrap();
        UpstreamVtn {
            child,
            url,
            bl_token: token["access_token"].as_str().unwrap().to_string(),
            ven: started["ven"].clone(),
        }
    }

    /// A request of the DSO's business logic.
    fn bl(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let req = ureq::request(method, &format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {}", self.bl_token));
        let answer = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match answer {
            Ok(r) => r.into_json().unwrap(),
            Err(ureq::Error::Status(code, r)) => {
                panic!("{method} {path}: {code} {}", r.into_string().unwrap())
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }
}

impl Drop for UpstreamVtn {
    fn drop(&mut self) {
        // Its stdin closed, the script stops the VTN and PostgreSQL.
        drop(self.child.stdin.take());
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the 20 connections' envelopes in `slot`, kWh (import, export).
fn envelope_sum(url: &str, slot: u64) -> (f64, f64) {
    let mut sum = (0.0, 0.0);
    for street in 1..=2 {
        for home in 1..=10 {
            let e = ureq::get(&format!(
                "{url}/v1/market/slots/{slot}/envelope?location=street-{street}/home-{home}"
            ))
            .call()
            .unwrap_or_else(|e| {
                panic!(
                    "{e}: the grid operator service: {}",
                    get(&format!("{url}/v1/grid"))
                )
            })
            .into_json::<Value>()
            .unwrap();
            let kwh = |f: &str| e[f].as_str().unwrap().parse::<f64>().unwrap();
            sum.0 += kwh("import_kwh");
            sum.1 += kwh("export_kwh");
        }
    }
    sum
}

/// A bid for 2.75 kWh at 0.60 at `street-1/home-1` in `slot`.
fn bid(url: &str, key: &str, slot: u64) {
    run(&[
        "tx",
        "order",
        "--slot",
        &slot.to_string(),
        "--side",
        "bid",
        "--energy-kwh",
        "2.75",
        "--price",
        "0.60",
        "--location",
        "street-1/home-1",
        "--key",
        key,
        "--node",
        url,
        "--json",
    ]);
}

/// `slot` once cleared: its view.
fn cleared(url: &str, slot: u64) -> Value {
    let s = slot.to_string();
    wait_for(&format!("slot {slot} to clear"), || {
        let v = run(&["query", "slot", &s, "--node", url, "--json"]);
        v["status"] != "open" && v["status"] != "closed"
    });
    run(&["query", "slot", &s, "--node", url, "--json"])
}

fn number(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn the_node_follows_its_dsos_vtn_and_reports_the_communitys_usage_back() {
    let dir = tempfile::tempdir().unwrap();
    let vtn = UpstreamVtn::start(dir.path());
    let program = vtn.bl(
        "POST",
        "/programs",
        Some(serde_json::json!({"objectType": "PROGRAM", "programName": "dso-congestion"})),
    );
    let program_id = program["id"].as_str().unwrap().to_string();
    // Another program's event, which the node does not follow.
    let other = vtn.bl(
        "POST",
        "/programs",
        Some(serde_json::json!({"objectType": "PROGRAM", "programName": "dso-other"})),
    );

    let (op_key, op) = new_key(dir.path(), "operator");
    let (home_key, home) = new_key(dir.path(), "home");
    let genesis = common::genesis_now(dir.path(), "two-streets", &[&home, &op], Some(&op), "");
    let upstream = dir.path().join("upstream.toml");
    std::fs::write(
        &upstream,
        format!(
            "url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\nven_name = \"two-streets\"\n\
             program = \"dso-congestion\"\npoll_s = 1\n",
            vtn.url,
            vtn.ven["client_id"].as_str().unwrap(),
            vtn.ven["client_secret"].as_str().unwrap()
        ),
    )
    .unwrap();
    let feeder = common::congestion_feeder();
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
            "--openadr-upstream",
            upstream.to_str().unwrap(),
            // No PCC meter here: the microgrid stays connected; a block a second, so every
            // slot is enveloped.
            "--pcc-timeout-s",
            "86400",
            "--empty-blocks",
            // Envelopes well ahead: the DSO's event changes a slot already enveloped.
            "--envelope-lead-slots",
            "16",
        ],
    );
    let url = node.url.clone();
    common::register_meter(&url, &home_key);
    // The node signs in, registers its VEN object and follows the program.
    wait_for("the node's VEN upstream", || {
        let u = get(&format!("{url}/v1/grid"))["upstream"].clone();
        u["ven_id"].is_string() && u["program_ids"] == serde_json::json!([program_id])
    });
    let vens = vtn.bl("GET", "/vens", None);
    assert!(
        vens.as_array()
            .unwrap()
            .iter()
            .any(|v| v["venName"] == "two-streets"),
        "{vens}"
    );

    // The DSO limits the community's import to 10 kW in a slot well ahead and prices it; a
    // nonsense limit the slot after; the other program's limit is not the community's.
    let open = get(&format!("{url}/v1/market"))["next_open_slot"]
        .as_u64()
        .unwrap();
    let slot = open + 14;
    wait_for("the slot's envelopes without a limit", || {
        ureq::get(&format!(
            "{url}/v1/market/slots/{slot}/envelope?location=street-2/home-10"
        ))
        .call()
        .is_ok()
    });
    let (unlimited, _) = envelope_sum(&url, slot);
    let start = |s: u64| gridmesh_node::openadr::wire::rfc3339(s * 900_000);
    let event = |program: &str, name: &str, s: u64, payloads: Value| {
        vtn.bl(
            "POST",
            "/events",
            Some(serde_json::json!({
                "objectType": "EVENT", "programID": program, "eventName": name, "priority": 1,
                "intervalPeriod": {"start": start(s), "duration": "PT15M"},
                "intervals": [{"id": 0, "payloads": payloads}],
            })),
        )
    };
    let limit = event(
        &program_id,
        "evening-congestion",
        slot,
        serde_json::json!([
            {"type": "IMPORT_CAPACITY_LIMIT", "values": [10.0]},
            {"type": "PRICE", "values": [0.42]},
            {"type": "EXPORT_PRICE", "values": [0.05]},
        ]),
    );
    event(
        &program_id,
        "nonsense",
        slot + 1,
        serde_json::json!([{"type": "IMPORT_CAPACITY_LIMIT", "values": [-5.0]}]),
    );
    event(
        other["id"].as_str().unwrap(),
        "not-ours",
        slot - 1,
        serde_json::json!([{"type": "IMPORT_CAPACITY_LIMIT", "values": [1.0]}]),
    );
    // The home bids in that slot and in the one before (no limit there).
    bid(&url, &home_key, slot);
    bid(&url, &home_key, slot - 1);
    wait_for("the limit to be followed", || {
        let u = get(&format!("{url}/v1/grid"))["upstream"].clone();
        u["limited_slots"] == 1 && u["priced_slots"] == 1 && u["events"] == 2
    });
    let status = get(&format!("{url}/v1/grid"))["upstream"].clone();
    assert!(
        status["left_out"][0]
            .as_str()
            .unwrap()
            .contains("IMPORT_CAPACITY_LIMIT"),
        "{status}"
    );

    // The slot before: the feeder's own envelopes and the genesis tariff.
    let before = cleared(&url, slot - 1);
    let (import_before, _) = envelope_sum(&url, slot - 1);
    assert!(import_before > 10.0, "{import_before} kWh");
    // The limited slot: 10 kW over 15 minutes is 2.5 kWh for the whole community, and the DSO's
    // prices are the utility's.
    let limited = cleared(&url, slot);
    let (import, export) = envelope_sum(&url, slot);
    assert!(import <= 2.5 && import > 2.4, "{import} kWh");
    assert_eq!(
        unlimited, import_before,
        "enveloped first as any other slot"
    );
    assert_eq!(export, envelope_sum(&url, slot - 1).1);
    assert_eq!(number(&limited["retail_per_kwh"]), 0.42, "{limited}");
    assert_eq!(number(&limited["feed_in_per_kwh"]), 0.05, "{limited}");
    assert_ne!(number(&before["retail_per_kwh"]), 0.42, "{before}");
    let served = |v: &Value| -> f64 {
        v["utility"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| number(&u["energy_kwh"]))
            .sum()
    };
    let own = number(
        &get(&format!(
            "{url}/v1/market/slots/{slot}/envelope?location=street-1/home-1"
        ))["import_kwh"],
    );
    assert!(
        served(&limited) <= own + 1e-9 && served(&limited) < served(&before) / 4.0,
        "served {} kWh with the limit, {} kWh without",
        served(&limited),
        served(&before)
    );

    // The home meters what it drew; once the slot settles, the community's usage goes back to
    // the DSO as a report on its event.
    let drawn = format!("{:.3}", served(&limited));
    wait_for("the reading to be taken", || {
        gridmesh(&[
            "tx",
            "reading",
            "--slot",
            &slot.to_string(),
            "--import-kwh",
            &drawn,
            "--key",
            &home_key,
            "--node",
            &url,
            "--json",
        ])
        .status
        .success()
    });
    let event_id = limit["id"].as_str().unwrap().to_string();
    let mut report = Value::Null;
    wait_for("the community's report upstream", || {
        let reports = vtn.bl("GET", "/reports", None);
        match reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["eventID"] == event_id.as_str())
        {
            Some(r) => {
                report = r.clone();
                true
            }
            None => false,
        }
    });
    assert_eq!(report["clientName"], "two-streets");
    let interval = &report["resources"][0]["intervals"][0];
    assert_eq!(report["resources"][0]["resourceName"], "AGGREGATED_REPORT");
    assert_eq!(interval["payloads"][0]["type"], "USAGE");
    let usage = interval["payloads"][0]["values"][0].as_f64().unwrap();
    assert!(
        (usage - drawn.parse::<f64>().unwrap()).abs() < 1e-9,
        "{report}"
    );
    assert_eq!(
        get(&format!("{url}/v1/grid"))["upstream"]["reports_sent"],
        1
    );
    eprintln!(
        "the DSO's 10 kW: the community's import envelopes {unlimited:.3} -> {import:.3} kWh; \
         home-1 served {:.3} kWh (without the limit {:.3}) at {} per kWh; reported {usage} kWh",
        served(&limited),
        served(&before),
        limited["retail_per_kwh"]
    );
    node.terminate();
}
