//! Privacy by default (issue 19, finding 10): a member's energy per slot (its meter and device
//! readings, orders, trades and bill) is shown only to its own session and whom it grants it.
//! A seller and a buyer trade one slot with quantities no other number on the node shares; then
//! every GET path of the OpenAPI document is called without a session, with every block, every
//! one of their transactions and their addresses as parameters. No answer may carry a metered
//! quantity (meter or device reading) at all, nor an order's or trade's energy next to who placed
//! it (its account or its connection's location): the public sees the order book and each slot's
//! volume without names. Signed in, the seller sees them (so the quantities are there to find).

mod common;

use common::{
    device_reading_after_slot, gridmesh, new_key, register_keyed_battery, stdout_json, wait_for,
    NodeProc,
};
use gridmesh_ledger::Keypair;

fn run(args: &[&str]) -> serde_json::Value {
    stdout_json(&gridmesh(args))
}

/// Runs a transaction command against the node at `url`, keeping its hash.
fn tx(hashes: &mut Vec<String>, url: &str, args: &[&str]) {
    let mut all = args.to_vec();
    all.extend(["--node", url, "--json"]);
    let out = run(&all);
    hashes.push(
        out["hash"]
            .as_str()
            .expect("a transaction hash")
            .to_string(),
    );
}

/// What the meters and the battery measured, as the node prints it (kWh with six decimals, and
/// mWh): never in a public answer.
const METERED: [&str; 6] = [
    "0.613847", "613847", "0.726394", "726394", "0.692158", "692158",
];
/// The ask's and the bid's energy (the trade's is the ask's): never next to who placed them.
const ORDERED: [&str; 4] = ["0.731962", "731962", "0.848517", "848517"];

/// What `body` shows of the members' energy: any metered quantity, and an ordered one if the
/// body also names one of `members` (accounts, device, locations).
fn leaks(body: &str, members: &[&str]) -> Vec<&'static str> {
    let named = members.iter().any(|m| body.contains(m));
    METERED
        .into_iter()
        .chain(ORDERED.into_iter().filter(|_| named))
        .filter(|s| body.contains(s))
        .collect()
}

/// GET `url` (with a session `token` if given): the status and the body, whatever the status.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = ureq::get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[test]
fn no_public_endpoint_shows_a_members_energy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = NodeProc::start(&data, &["--time-scale", "600"]);
    let url = node.url.clone();
    let faucet = data.join("faucet.key").display().to_string();
    let (seller_key, seller) = new_key(dir.path(), "seller");
    let (buyer_key, buyer) = new_key(dir.path(), "buyer");
    let (battery_key, battery) = new_key(dir.path(), "battery");
    for to in [&seller, &buyer] {
        common::transfer(&url, &faucet, to, "100");
    }
    let mut hashes = Vec::new();
    let registered = register_keyed_battery(&url, &battery_key, &seller_key, "street/seller");
    hashes.push(registered["hash"].as_str().unwrap().to_string());
    tx(
        &mut hashes,
        &url,
        &[
            "tx",
            "register-device",
            "--kind",
            "meter",
            "--capacity-kw",
            "10",
            "--key",
            &buyer_key,
        ],
    );
    let market = run(&["query", "market", "--node", &url, "--json"]);
    let slot = market["next_open_slot"].as_u64().unwrap() + 3;
    let s = slot.to_string();
    for (side, kwh, price, location, key) in [
        ("ask", "0.731962", "0.10", "street/seller", &seller_key),
        ("bid", "0.848517", "0.25", "street/buyer", &buyer_key),
    ] {
        tx(
            &mut hashes,
            &url,
            &[
                "tx",
                "order",
                "--slot",
                &s,
                "--side",
                side,
                "--energy-kwh",
                kwh,
                "--price",
                price,
                "--location",
                location,
                "--key",
                key,
            ],
        );
    }
    let slot_status = || run(&["query", "slot", &s, "--node", &url, "--json"])["status"].clone();
    wait_for("clearing", || {
        slot_status() != "open" && slot_status() != "closed"
    });
    // The battery's reading, once the slot has ended.
    let v = device_reading_after_slot(&url, &battery_key, &seller_key, &s, "0.692158");
    hashes.push(v["hash"].as_str().unwrap().to_string());
    tx(
        &mut hashes,
        &url,
        &[
            "tx",
            "reading",
            "--slot",
            &s,
            "--export-kwh",
            "0.613847",
            "--key",
            &seller_key,
        ],
    );
    tx(
        &mut hashes,
        &url,
        &[
            "tx",
            "reading",
            "--slot",
            &s,
            "--import-kwh",
            "0.726394",
            "--key",
            &buyer_key,
        ],
    );
    wait_for("settlement", || slot_status() == "final");

    // Signed in, the seller sees its own quantities (the test is not vacuous).
    let client = gridmesh_client::client::Client::new(&url);
    let token = client
        .sign_in(&Keypair::load(std::path::Path::new(&seller_key)).unwrap())
        .unwrap();
    let (code, mine) = get(&format!("{url}/v1/market/slots/{slot}"), Some(&token));
    assert_eq!(code, 200);
    for secret in ["0.731962", "0.613847", "0.692158"] {
        assert!(
            mine.contains(secret),
            "the seller's view lacks {secret}: {mine}"
        );
    }
    let (_, own_tx) = get(&format!("{url}/v1/tx/{}", hashes[2]), Some(&token));
    assert!(
        own_tx.contains("731962"),
        "the seller's own order: {own_tx}"
    );
    let (_, device) = get(&format!("{url}/v1/devices/{battery}"), Some(&token));
    assert!(device.contains("0.692158"), "{device}");

    // Without a session: every GET path of the API, with every parameter we know of.
    let api: serde_json::Value = ureq::get(&format!("{url}/v1/openapi.json"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let head = run(&["query", "status", "--node", &url, "--json"])["height"]
        .as_u64()
        .unwrap();
    let mut called = 0;
    let mut paths_seen = 0;
    for (path, item) in api["paths"].as_object().unwrap() {
        if item.get("get").is_none() {
            continue;
        }
        paths_seen += 1;
        let mut urls = vec![path.clone()];
        let mut fill = |name: &str, values: &[String]| {
            urls = urls
                .iter()
                .flat_map(|u| {
                    if u.contains(name) {
                        values.iter().map(|v| u.replace(name, v)).collect()
                    } else {
                        vec![u.clone()]
                    }
                })
                .collect();
        };
        fill("{slot}", std::slice::from_ref(&s));
        fill(
            "{height}",
            &(1..=head).map(|h| h.to_string()).collect::<Vec<_>>(),
        );
        fill("{hash}", &hashes);
        fill(
            "{address}",
            &[seller.clone(), buyer.clone(), battery.clone()],
        );
        fill("{device}", std::slice::from_ref(&battery));
        fill("{owner}", std::slice::from_ref(&seller));
        fill("{grantee}", std::slice::from_ref(&buyer));
        fill("{index}", &["0".to_string()]);
        for u in urls {
            // The query parameters the paths take: an owner, a slot, a location.
            let full = format!(
                "{url}{u}?owner={seller}&slot={s}&slots=96&location=street/seller&limit=100"
            );
            let (code, body) = get(&full, None);
            called += 1;
            assert!(code < 500, "{full}: {code} {body}");
            let found = leaks(
                &body,
                &[&seller, &buyer, &battery, "street/seller", "street/buyer"],
            );
            assert!(
                found.is_empty(),
                "{full} ({code}) shows a member's energy {found:?}: {}",
                body.chars().take(2_000).collect::<String>()
            );
        }
    }
    assert!(paths_seen >= 25, "only {paths_seen} GET paths documented");
    assert!(called > paths_seen, "{called} calls");
    drop(node);
}
