//! The energy market through the real binary: devices, orders with escrow, clearing at gate
//! closure, readings, settlement and bills, via the CLI and `/v1/market/slots/{slot}`; and
//! `gridmesh market clear` on an order file.

mod common;

use common::{
    device_reading_after_slot, gridmesh, new_key, register_keyed_battery, stdout_json, wait_for,
    NodeProc,
};

fn run(args: &[&str]) -> serde_json::Value {
    stdout_json(&gridmesh(args))
}

/// Runs a command that must fail, with `needle` in its error.
fn refused(args: &[&str], needle: &str) {
    let out = gridmesh(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(err.contains(needle), "{args:?}: {err}");
}

fn slot_json(url: &str, slot: u64) -> serde_json::Value {
    run(&["query", "slot", &slot.to_string(), "--node", url, "--json"])
}

/// The slot as the member with `key` sees it: its own trades, bill and device readings too.
fn my_slot_json(url: &str, slot: u64, key: &str) -> serde_json::Value {
    run(&[
        "query",
        "slot",
        &slot.to_string(),
        "--key",
        key,
        "--node",
        url,
        "--json",
    ])
}

#[test]
fn a_slot_traded_cleared_metered_and_settled_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 600x: a 15-minute slot passes in 1.5 s, the 60-minute correction window in 6 s.
    let node = NodeProc::start(&data, &["--time-scale", "600"]);
    let url = node.url.clone();
    let faucet = data.join("faucet.key").display().to_string();
    let (seller_key, seller) = new_key(dir.path(), "seller");
    let (buyer_key, buyer) = new_key(dir.path(), "buyer");
    for to in [&seller, &buyer] {
        common::transfer(&url, &faucet, to, "100");
    }
    // The seller sells from a battery with its own key (a device declared without one sells
    // nothing); the buyer declares its meter.
    let (battery_key, _) = new_key(dir.path(), "battery");
    run(&[
        "tx",
        "register-device",
        "--kind",
        "pv",
        "--capacity-kw",
        "5",
        "--key",
        &seller_key,
        "--node",
        &url,
        "--json",
    ]);
    let market = run(&["query", "market", "--node", &url, "--json"]);
    refused(
        &[
            "tx",
            "order",
            "--slot",
            &(market["next_open_slot"].as_u64().unwrap() + 3).to_string(),
            "--side",
            "ask",
            "--energy-kwh",
            "1",
            "--price",
            "0.10",
            "--key",
            &seller_key,
            "--node",
            &url,
        ],
        "a device declared without a key sells nothing",
    );
    register_keyed_battery(&url, &battery_key, &seller_key, "street/a");
    run(&[
        "tx",
        "register-device",
        "--kind",
        "meter",
        "--capacity-kw",
        "10",
        "--key",
        &buyer_key,
        "--node",
        &url,
        "--json",
    ]);

    // A device with its own key: its registration is signed by the device key and bonds 10
    // tokens; the same device twice is refused.
    let (device_key, device) = new_key(dir.path(), "inverter");
    let (owner_key, owner) = new_key(dir.path(), "owner");
    common::transfer(&url, &faucet, &owner, "25");
    let register = [
        "tx",
        "register-device",
        "--kind",
        "pv",
        "--capacity-kw",
        "5",
        "--device-key",
        &device_key,
        "--location",
        "street-1/house-4",
        "--latitude",
        "47.37",
        "--longitude",
        "8.54",
        "--tilt",
        "30",
        "--bond",
        "10",
        "--key",
        &owner_key,
        "--node",
        &url,
        "--json",
    ];
    run(&register);
    refused(&register, "is already registered");
    let balance = run(&["query", "account", &owner, "--node", &url, "--json"]);
    assert_eq!(balance["balance"], "15", "10 tokens bonded");
    let d: serde_json::Value = ureq::get(&format!("{url}/v1/devices/{device}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(
        (d["owner"].as_str(), d["kind"].as_str(), d["bond"].as_str()),
        (Some(owner.as_str()), Some("pv"), Some("10"))
    );
    assert_eq!(d["latitude_deg"].as_f64(), Some(47.37));
    assert!(matches!(
        ureq::get(&format!("{url}/v1/devices/{seller}")).call(),
        Err(ureq::Error::Status(404, _))
    ));

    // Envelopes and islanding events are the grid operator's: anyone else is refused by name.
    refused(
        &[
            "tx",
            "grid-event",
            "--event",
            "islanded",
            "--key",
            &buyer_key,
            "--node",
            &url,
        ],
        "only the market's grid operator",
    );
    refused(
        &[
            "tx",
            "envelope",
            "--slot",
            "1",
            "--location",
            "street/a",
            "--import-kwh",
            "1",
            "--export-kwh",
            "0",
            "--key",
            &seller_key,
            "--node",
            &url,
        ],
        "only the market's grid operator",
    );

    // An ask beyond what the battery gives in 15 minutes: refused with the reason.
    let market = run(&["query", "market", "--node", &url, "--json"]);
    let slot = market["next_open_slot"].as_u64().unwrap() + 3;
    let s = slot.to_string();
    refused(
        &[
            "tx",
            "order",
            "--slot",
            &s,
            "--side",
            "ask",
            "--energy-kwh",
            "2",
            "--price",
            "0.10",
            "--key",
            &seller_key,
            "--node",
            &url,
        ],
        "producing devices",
    );

    let placed = run(&[
        "tx",
        "order",
        "--slot",
        &s,
        "--side",
        "ask",
        "--energy-kwh",
        "1",
        "--price",
        "0.10",
        "--location",
        "street/a",
        "--key",
        &seller_key,
        "--node",
        &url,
        "--json",
    ]);
    assert_eq!(placed["receipt"]["events"][0]["type"], "order_placed");
    run(&[
        "tx",
        "order",
        "--slot",
        &s,
        "--side",
        "bid",
        "--energy-kwh",
        "0.8",
        "--price",
        "0.25",
        "--location",
        "street/b",
        "--key",
        &buyer_key,
        "--node",
        &url,
        "--json",
    ]);
    let open = slot_json(&url, slot);
    assert_eq!(open["status"], "open");
    assert_eq!(open["orders"], 2);
    assert_eq!(open["depth"].as_array().unwrap().len(), 2);

    // Gate closure clears the slot: the seller's unsold remainder at 0.10 sets the price.
    wait_for("clearing", || {
        slot_json(&url, slot)["status"] != "open" && slot_json(&url, slot)["status"] != "closed"
    });
    let cleared = my_slot_json(&url, slot, &buyer_key);
    assert_eq!(cleared["clearing_price_per_kwh"], "0.1");
    assert_eq!(cleared["volume_kwh"], "0.8");
    assert_eq!(cleared["trades"][0]["buyer"], buyer.as_str());
    // Too late to order now.
    refused(
        &[
            "tx",
            "order",
            "--slot",
            &s,
            "--side",
            "bid",
            "--energy-kwh",
            "0.1",
            "--price",
            "0.3",
            "--key",
            &buyer_key,
            "--node",
            &url,
        ],
        "gate closure",
    );

    // After delivery the battery reports the 0.5 kWh it gave, before the slot settles an hour
    // later.
    device_reading_after_slot(&url, &battery_key, &seller_key, &s, "0.5");
    // Then the meters (a nonsense reading is refused), and settlement.
    refused(
        &[
            "tx",
            "reading",
            "--slot",
            &s,
            "--export-kwh",
            "99",
            "--key",
            &seller_key,
            "--node",
            &url,
        ],
        "more than",
    );
    run(&[
        "tx",
        "reading",
        "--slot",
        &s,
        "--export-kwh",
        "0.5",
        "--key",
        &seller_key,
        "--node",
        &url,
        "--json",
    ]);
    run(&[
        "tx",
        "reading",
        "--slot",
        &s,
        "--import-kwh",
        "0.8",
        "--key",
        &buyer_key,
        "--node",
        &url,
        "--json",
    ]);
    wait_for("settlement", || slot_json(&url, slot)["status"] == "final");
    let done = my_slot_json(&url, slot, &buyer_key);
    let st = &done["trades"][0]["settlement"];
    assert_eq!(st["delivered_kwh"], "0.5");
    assert_eq!(st["buyer_paid"], "0.05");
    // Collateral 0.8 kWh x (0.30 - 0.10) = 0.16; the 0.3 kWh shortfall's share is 0.06.
    assert_eq!(st["compensation"], "0.06");
    assert_eq!(st["estimated"], false);
    let bill = done["bills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["account"] == buyer.as_str())
        .unwrap();
    assert_eq!(bill["utility_import_kwh"], "0.3");
    assert_eq!(bill["utility_cost"], "0.09");
    // The public sees the slot's aggregates, not who traded or metered what; the HTTP view is the
    // CLI's document, and the OpenAPI document lists it.
    let public = slot_json(&url, slot);
    assert_eq!(public["volume_kwh"], done["volume_kwh"]);
    assert!(public["trades"].as_array().unwrap().is_empty(), "{public}");
    assert!(public["bills"].as_array().unwrap().is_empty(), "{public}");
    assert!(public["device_readings"].as_array().unwrap().is_empty());
    assert_eq!(
        public["private_rows_hidden"], 4,
        "a trade, two bills, a reading"
    );
    assert_eq!(
        done["private_rows_hidden"], 2,
        "the seller's bill and reading"
    );
    let http: serde_json::Value = ureq::get(&format!("{url}/v1/market/slots/{slot}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(http, public);
    let api: serde_json::Value = ureq::get(&format!("{url}/v1/openapi.json"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(api["paths"]["/v1/market/slots/{slot}"].is_object());
    // Price lists for tools that plan by price (evcc's custom tariff format): an entry per slot
    // from the current one over the next 24 hours, tokens per kWh.
    for list in ["grid", "feedin"] {
        assert!(api["paths"][format!("/v1/tariff/{list}")]["get"].is_object());
        let prices: serde_json::Value = ureq::get(&format!("{url}/v1/tariff/{list}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let prices = prices.as_array().expect("a JSON array");
        assert_eq!(prices.len(), 97, "{list}");
        for p in prices {
            let (start, end) = (p["start"].as_str().unwrap(), p["end"].as_str().unwrap());
            assert!(start.ends_with(":00Z") && end.ends_with(":00Z"), "{p}");
            assert!(p["value"].as_f64().is_some_and(|v| v > 0.0), "{p}");
        }
        assert_eq!(prices[0]["end"], prices[1]["start"]);
    }
    assert_eq!(
        run(&["query", "market", "--node", &url, "--json"])["escrow_balance"],
        "0"
    );
    // Seller: 100 - 10 bonded - 0.16 collateral... ended with 0.05 paid + 0.10 collateral back;
    // buyer 100 - 0.05 + 0.06.
    let bal = |a: &str| {
        run(&["query", "account", a, "--node", &url, "--json"])["balance"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(bal(&seller), "89.99");
    assert_eq!(bal(&buyer), "100.01");
    drop(node);
}

#[test]
fn market_clear_reproduces_gsy_e_and_explains_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.json");
    let orders: Vec<serde_json::Value> = (1..=7)
        .flat_map(|r| {
            [
                serde_json::json!({"id": format!("b{r}"), "side": "bid", "energy_kwh": 1, "price_per_kwh": r}),
                serde_json::json!({"id": format!("a{r}"), "side": "ask", "energy_kwh": "1", "price_per_kwh": r.to_string()}),
            ]
        })
        .collect();
    std::fs::write(&file, serde_json::json!({ "orders": orders }).to_string()).unwrap();
    let f = file.to_str().unwrap();
    let r = run(&[
        "market",
        "clear",
        "--orders",
        f,
        "--mechanism",
        "pay-as-clear",
        "--json",
    ]);
    assert_eq!(r["mechanism"], "pay-as-clear");
    assert_eq!(r["clearing_price_per_kwh"].as_f64(), Some(4.0));
    assert_eq!(r["volume_kwh"].as_f64(), Some(4.0));
    assert_eq!(r["trades"].as_array().unwrap().len(), 4);
    assert!(r["welfare"].as_f64().unwrap() <= r["optimal_welfare"].as_f64().unwrap());
    for m in ["pay-as-bid", "pay-as-offer", "huang"] {
        let r = run(&["market", "clear", "--orders", f, "--mechanism", m, "--json"]);
        assert!(r["clearing_price_per_kwh"].is_null(), "{m}");
        assert!(r["volume_kwh"].as_f64().unwrap() > 0.0, "{m}");
    }
    // community needs a tariff; the error says so.
    refused(
        &["market", "clear", "--orders", f, "--mechanism", "community"],
        "tariff",
    );
    std::fs::write(
        &file,
        r#"{"orders": [{"id": "x", "side": "bid", "energy_kwh": "abc", "price_per_kwh": 1}]}"#,
    )
    .unwrap();
    refused(&["market", "clear", "--orders", f], "energy");
}

/// On a time-scaled node without empty blocks the head's time lags the node's clock; an order
/// for the default slot is still one the next block takes (issue 24: it was refused as closed).
#[test]
fn the_default_slot_is_open_when_the_next_block_comes_on_a_time_scaled_node() {
    let dir = tempfile::tempdir().unwrap();
    let (key, addr) = new_key(dir.path(), "home");
    let genesis = common::genesis_now(dir.path(), "scaled", &[&addr], None, "");
    let node = NodeProc::start(
        &dir.path().join("data"),
        &[
            "--genesis",
            genesis.to_str().unwrap(),
            "--time-scale",
            "600",
        ],
    );
    common::register_meter(&node.url, &key);
    // Nothing happens for 3 s: 30 minutes of the node's clock, the head still at its last block.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let market = common::get_json(&format!("{}/v1/market", node.url));
    let next_block_ms = market["next_block_ms"].as_u64().unwrap();
    assert!(
        next_block_ms > market["now_ms"].as_u64().unwrap() + 20 * 60_000,
        "{market}"
    );
    assert!(market["next_gate_closure_ms"].as_u64().unwrap() > next_block_ms);
    let placed = run(&[
        "tx",
        "order",
        "--side",
        "bid",
        "--energy-kwh",
        "1",
        "--price",
        "0.30",
        "--key",
        &key,
        "--node",
        &node.url,
        "--json",
    ]);
    assert!(placed["height"].as_u64().is_some(), "{placed}");
    node.terminate();
}
