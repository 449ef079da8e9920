//! Home agents trading through a real node (`gridmesh agent`): each bids its home's wish for the
//! next open slot before gate closure, the linear ramp re-prices as the gate nears (cancel and
//! place), the optimising agent bids an EV's charging at its marginal value, and the orders are
//! on the ledger. A broken home file is refused clearly.

mod common;

use std::path::Path;

use common::{gridmesh, new_key, stdout_json, NodeProc};

/// The hour of the day now (UTC): the test homes' EVs are plugged in around it.
fn utc_hour() -> u8 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (now.as_secs() / 3_600 % 24) as u8
}

fn agent(node: &str, key: &str, home: &Path, strategy: &str, slots: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        .args([
            "agent",
            "--key",
            key,
            "--home",
            home.to_str().unwrap(),
            "--strategy",
            strategy,
            "--slots",
            slots,
            "--gate-margin-s",
            "300",
            "--poll-ms",
            "50",
            "--node",
            node,
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn agents_bid_through_the_node_and_keep_their_orders_current_until_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (ramp_key, ramp) = new_key(dir.path(), "ramp");
    let (opt_key, opt) = new_key(dir.path(), "opt");
    let (op_key, op) = new_key(dir.path(), "operator");
    let genesis = common::genesis_now(dir.path(), "agents", &[&ramp, &opt, &op], Some(&op), "");
    let node = NodeProc::start(
        &dir.path().join("data"),
        &[
            "--genesis",
            genesis.to_str().unwrap(),
            "--time-scale",
            "600",
            // The agents read the chain's clock from its head.
            "--empty-blocks",
        ],
    );
    // A home without PV always imports; the EV home must charge 20 kWh within 3 to 4 hours.
    let plain = dir.path().join("plain.toml");
    std::fs::write(
        &plain,
        "location = \"street-1/home-1\"\nannual_kwh = 4000\nseed = 3\n",
    )
    .unwrap();
    let hour = utc_hour();
    let ev_home = dir.path().join("ev.toml");
    std::fs::write(
        &ev_home,
        format!(
            "location = \"street-1/home-2\"\nannual_kwh = 3000\npv_kwp = 5\n[battery]\ncapacity_kwh = 8\npower_kw = 4\nreserve_kwh = 1\n[ev]\npower_kw = 11\nenergy_kwh = 20\narrival_hour = {}\ndeparture_hour = {}\n",
            (hour + 23) % 24,
            (hour + 4) % 24
        ),
    )
    .unwrap();
    // The grid operator asks everyone to reduce draw in the two slots after the next open one.
    let open = stdout_json(&gridmesh(&[
        "query", "market", "--node", &node.url, "--json",
    ]))["next_open_slot"]
        .as_u64()
        .unwrap();
    let asked = [open + 1, open + 2];
    for s in asked {
        stdout_json(&gridmesh(&[
            "tx",
            "request-flex",
            "--slot",
            &s.to_string(),
            "--direction",
            "reduce",
            "--value-per-kwh",
            "1",
            "--key",
            &op_key,
            "--node",
            &node.url,
            "--json",
        ]));
    }
    let market = stdout_json(&gridmesh(&[
        "query", "market", "--node", &node.url, "--json",
    ]));
    assert_eq!(
        market["flexibility_requests"].as_array().unwrap().len(),
        2,
        "{market}"
    );
    // Only devices with their own keys sell: the ramp's account bonds a battery (its home file
    // has none to plan with, so it still only bids); the EV home's account has no keyed device,
    // and its agent only buys.
    let (battery_key, _) = new_key(dir.path(), "battery");
    common::register_keyed_battery(&node.url, &battery_key, &ramp_key, "street-1/home-1");
    let a = agent(&node.url, &ramp_key, &plain, "linear-ramp", "3");
    let b = agent(&node.url, &opt_key, &ev_home, "optimising", "3");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ra, rb) = (stdout_json(&a), stdout_json(&b));
    eprintln!(
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(ra["slots"], 3, "{ra}");
    assert_eq!(rb["slots"], 3, "{rb}");
    assert_eq!(ra["refused"], 0, "{ra}");
    assert_eq!(rb["refused"], 0, "{rb}");
    assert_eq!(ra["sells"], true, "{ra}");
    assert_eq!(rb["sells"], false, "{rb}");
    // The ramp re-priced upward within a slot: cancelled orders, each replaced at a higher bid.
    assert!(ra["cancelled"].as_u64().unwrap() >= 1, "{ra}");
    let orders = ra["orders"].as_array().unwrap();
    let first_slot = orders[0]["slot"].as_u64().unwrap();
    let prices: Vec<u64> = orders
        .iter()
        .filter(|o| o["slot"] == first_slot)
        .map(|o| o["price_per_kwh"].as_u64().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] < w[1]), "{prices:?}");
    assert!(orders.iter().all(|o| o["side"] == "bid"));
    // The EV home bids to charge, at no more than the retail price (0.30 by default), except
    // where the operator asked for less draw: there the EV waits and the battery covers the home.
    let ev_orders = rb["orders"].as_array().unwrap();
    assert!(!ev_orders.is_empty(), "{rb}");
    let mut charging = 0;
    for o in ev_orders {
        assert_eq!(o["side"], "bid");
        assert!(o["price_per_kwh"].as_u64().unwrap() <= 300_000, "{o}");
        let energy = o["energy_mwh"].as_u64().unwrap();
        if asked.contains(&o["slot"].as_u64().unwrap()) {
            assert!(energy < 500_000, "asked to reduce: {o}");
        } else {
            assert!(energy > 1_000_000, "{o}");
            charging += 1;
        }
    }
    assert!(charging >= 1, "{rb}");
    // The live orders are on the ledger: every slot the agents bid in cleared with them.
    for o in orders
        .iter()
        .chain(ev_orders)
        .filter(|o| o["cancelled"] == false)
    {
        let slot = o["slot"].as_u64().unwrap().to_string();
        common::wait_for("the slot to clear", || {
            let v = stdout_json(&gridmesh(&[
                "query", "slot", &slot, "--node", &node.url, "--json",
            ]));
            v["status"] != "open" && v["status"] != "closed"
        });
        let v = stdout_json(&gridmesh(&[
            "query", "slot", &slot, "--node", &node.url, "--json",
        ]));
        assert!(v["orders"].as_u64().unwrap() >= 1, "{v}");
        assert!(o["order_id"].is_u64(), "{o}");
    }
    // Bad homes are refused with the reason.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "annual_kwh = 3000\npv_kw = 4\n").unwrap();
    let out = gridmesh(&[
        "agent",
        "--key",
        &ramp_key,
        "--home",
        broken.to_str().unwrap(),
        "--node",
        &node.url,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.toml") && err.contains("pv_kw"),
        "{err}"
    );
}

/// With the grid operator's service enveloping a congested street (20 homes on 100 kVA), the
/// optimising agent plans its EV within its connection's envelope and bids no more than it.
#[test]
fn the_optimising_agent_plans_within_its_operating_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let (op_key, op) = new_key(dir.path(), "operator");
    let (home_key, home) = new_key(dir.path(), "home");
    let genesis = common::genesis_now(dir.path(), "envelopes", &[&home, &op], Some(&op), "");
    let feeder = common::congestion_feeder();
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
            &op_key,
            // At 600x a slot passes in 1.5 s: envelopes for 8 slots ahead, so a loaded machine
            // that stalls the operator for a few seconds does not leave the agent's slot without.
            "--envelope-lead-slots",
            "8",
        ],
    );
    let hour = utc_hour();
    let ev_home = dir.path().join("ev.toml");
    std::fs::write(
        &ev_home,
        format!(
            "location = \"street-1/home-2\"\nannual_kwh = 3000\n[ev]\npower_kw = 11\nenergy_kwh = 6\narrival_hour = {}\ndeparture_hour = {}\n",
            (hour + 23) % 24,
            (hour + 4) % 24
        ),
    )
    .unwrap();
    let out = agent(&node.url, &home_key, &ev_home, "optimising", "3")
        .wait_with_output()
        .unwrap();
    let report = stdout_json(&out);
    assert_eq!(report["refused"], 0, "{report}");
    let live: Vec<&serde_json::Value> = report["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["cancelled"] == false)
        .collect();
    assert!(!live.is_empty(), "{report}");
    for o in live {
        let slot = o["slot"].as_u64().unwrap();
        let e = common::get_json(&format!(
            "{}/v1/market/slots/{slot}/envelope?location=street-1%2Fhome-2",
            node.url
        ));
        let cap_mwh = (e["import_kwh"].as_str().unwrap().parse::<f64>().unwrap() * 1e6) as u64;
        let energy = o["energy_mwh"].as_u64().unwrap();
        eprintln!("slot {slot}: bid {energy} mWh, envelope {cap_mwh} mWh");
        // Charging, at no more than the envelope (about 0.95 kWh; unconstrained it would be 2.75+).
        assert!(
            energy <= cap_mwh && energy * 2 > cap_mwh,
            "{o} vs envelope {e}"
        );
    }
    // No envelope for a connection the operator does not know.
    let r = ureq::get(&format!(
        "{}/v1/market/slots/1/envelope?location=nowhere",
        node.url
    ))
    .call();
    assert!(matches!(r, Err(ureq::Error::Status(404, _))));
}
