//! Interop: our Huang trade-reduction auction against pymarket's (the reference implementation
//! the DESIGN names), on hundreds of random order sets: the same orders trade the same energy at
//! the same two prices.
//!
//! pymarket runs in the project's venv (`./scripts/setup` makes `.venv` from
//! `scripts/interop/requirements.txt`); without it the test fails.
//!
//! Prices are distinct across all orders: where a bid's price equals an ask's at the crossing,
//! pymarket's curve intersection finds no crossing and clears nothing (a documented difference).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use gridmesh_market::{clear, Areas, Mechanism, Order, Side};

pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_case(rng: &mut Rng) -> Vec<Order> {
    let n = 2 + rng.below(40) as usize;
    // Distinct prices: a random subset of a grid, shuffled.
    let mut prices: Vec<u64> = (1..=400).map(|k| k * 997).collect();
    for i in (1..prices.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        prices.swap(i, j);
    }
    (0..n)
        .map(|i| Order {
            id: i as u64,
            side: if rng.below(2) == 0 {
                Side::Bid
            } else {
                Side::Ask
            },
            // 1 Wh .. 5 kWh in whole Wh.
            energy_mwh: (1 + rng.below(5_000)) * 1_000,
            price_per_kwh: prices[i],
            time: 0,
            area: 0,
        })
        .collect()
}

#[test]
fn huang_matches_pymarket_on_random_order_sets() {
    let python = gridmesh_refdata::require_python();
    let cases_n: usize = std::env::var("GRIDMESH_INTEROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng(20261124);
    let cases: Vec<Vec<Order>> = (0..cases_n).map(|_| random_case(&mut rng)).collect();
    let input = serde_json::json!({
        "cases": cases.iter().map(|c| c.iter().map(|o| serde_json::json!({
            "id": o.id,
            "side": if o.side == Side::Bid { "bid" } else { "ask" },
            "energy": o.energy_mwh,
            "price": o.price_per_kwh,
        })).collect::<Vec<_>>()).collect::<Vec<_>>()
    });
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/interop/pymarket_peer.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg("huang")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pymarket peer failed");
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = theirs["results"].as_array().unwrap();
    assert_eq!(results.len(), cases.len());

    let mut trading_cases = 0;
    for (k, (orders, r)) in cases.iter().zip(results).enumerate() {
        let ours = clear(orders, &Areas::flat(), Mechanism::Huang, None).unwrap();
        let our_traded: BTreeMap<u64, u64> = ours.traded_by_order();
        let their_traded: BTreeMap<u64, f64> = r["traded"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, q)| (id.parse().unwrap(), q.as_f64().unwrap()))
            .collect();
        let ids: std::collections::BTreeSet<u64> = our_traded
            .keys()
            .chain(their_traded.keys())
            .copied()
            .collect();
        for id in ids {
            let a = our_traded.get(&id).copied().unwrap_or(0) as f64;
            let b = their_traded.get(&id).copied().unwrap_or(0.0);
            // Integer shares of the long side's reduction may differ by one mWh from floats.
            assert!(
                (a - b).abs() <= 1.0 + 1e-6,
                "case {k}: order {id} trades {a} mWh here, {b} in pymarket\norders: {orders:?}"
            );
        }
        if let Some(t) = ours.trades.first() {
            trading_cases += 1;
            assert!(ours
                .trades
                .iter()
                .all(|x| x.buyer_price_per_kwh == t.buyer_price_per_kwh
                    && x.seller_price_per_kwh == t.seller_price_per_kwh));
            assert_eq!(
                Some(t.buyer_price_per_kwh as f64),
                r["price_buy"].as_f64(),
                "case {k}"
            );
            assert_eq!(
                Some(t.seller_price_per_kwh as f64),
                r["price_sell"].as_f64(),
                "case {k}"
            );
        }
    }
    eprintln!(
        "{} order sets compared, {trading_cases} with trades",
        cases.len()
    );
    assert!(
        trading_cases > cases.len() / 4,
        "too few sets traded to mean anything"
    );
}
