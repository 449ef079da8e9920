//! The demo's community on a real node: the node serves its API while the day runs, every
//! transaction is signed and committed, and the node's chain ends where the in-memory simulator's
//! does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridmesh_tools::demo_community::{self, DemoOptions};

fn options(overrides: &[&str]) -> DemoOptions {
    DemoOptions {
        day_seconds: 0.0,
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn the_node_serves_the_run_and_ends_where_the_simulator_does() {
    // 30 homes for the afternoon and evening of the outage day: quick, and through an island.
    let overrides = ["homes.count=30", "period.days=1"];
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let heights = Arc::new(Mutex::new(Vec::<u64>::new()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = rt
        .block_on(demo_community::run(options(&overrides), {
            let lines = lines.clone();
            let heights = heights.clone();
            move |line: String| {
                // The first line names the API: poll it while the day runs.
                if let Some(api) = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .map(|w| w.trim_end_matches(',').to_string())
                {
                    let heights = heights.clone();
                    std::thread::spawn(move || {
                        let client = gridmesh_client::client::Client::new(&api);
                        while let Ok(s) = client.status() {
                            heights.lock().unwrap().push(s.height);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    });
                }
                lines.lock().unwrap().push(line);
            }
        }))
        .unwrap();
    let o = &run.outcome;
    let heights = heights.lock().unwrap().clone();
    assert!(
        heights.iter().any(|&h| h > 10),
        "the API served the chain while it grew: {heights:?}"
    );
    // One block of registrations, one per slot and five to settle the last ones.
    assert_eq!(o.ledger.height, 1 + 96 + 5);
    assert!(o.ledger.rejected.is_empty(), "{:?}", o.ledger.rejected);
    assert!(
        o.ledger.transactions > 30 * 96,
        "every home reads and trades"
    );
    assert!(o.community.outage_slots > 0, "the day has its outage");
    assert!(o.community.p2p_kwh > 0.0);
    let lines = lines.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("islanded")),
        "a line reports the island: {lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("self-sufficiency")));

    // The same scenario in memory: the same homes, the same energy, the same transactions. Not
    // the same state root: signed transactions hash differently from the simulator's unsigned
    // ones, and the node's mempool orders a block round-robin by sender, so orders at equal
    // prices arrive in another order (arrival breaks ties): who trades at a tie may differ.
    let s = demo_community::scenario(
        demo_community::DEFAULT_SCENARIO,
        &overrides.map(String::from),
    )
    .unwrap();
    let base = std::path::Path::new(".");
    let sim = gridmesh_sim::run(&s, base, &mut |_, _| {}).unwrap();
    assert_eq!(sim.community.self_sufficiency, o.community.self_sufficiency);
    assert_eq!(sim.community.peak_import_kw, o.community.peak_import_kw);
    assert!((sim.community.p2p_kwh - o.community.p2p_kwh).abs() < 1e-6);
    assert!(
        (sim.community.mean_bill - o.community.mean_bill).abs()
            < 0.02 * sim.community.mean_baseline_bill.abs(),
        "{} against {}",
        o.community.mean_bill,
        sim.community.mean_bill
    );
    assert_eq!(sim.ledger.transactions, o.ledger.transactions);
    assert_eq!(sim.ledger.height, o.ledger.height);
}

#[test]
fn a_broken_override_is_refused_before_the_node_starts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt
        .block_on(demo_community::run(
            options(&["homes.count=-3"]),
            |_: String| {},
        ))
        .unwrap_err();
    assert!(format!("{e:#}").contains("homes.count"), "{e:#}");
}

#[test]
fn a_paced_day_takes_its_wall_time() {
    // A day of 10 homes paced at 4.8 s per day: 50 ms per slot, so its 102 blocks (registrations,
    // 96 slots, 5 to settle) take at least 5 s of wall time.
    let mut o = options(&["homes.count=10", "period.days=1"]);
    o.day_seconds = 4.8;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    let run = rt.block_on(demo_community::run(o, |_: String| {})).unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(took >= 4.7, "paced: {took:.2} s");
    assert!(took < 30.0, "{took:.2} s");
    assert!(run.wall_seconds >= 4.7);
}

#[test]
fn the_node_shows_the_feeder_as_the_simulator_solved_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (node, run) = rt
        .block_on(demo_community::start(
            options(&["homes.count=20", "period.days=1"]),
            Arc::new(|_: String| {}),
        ))
        .unwrap();
    let v: serde_json::Value = ureq::get(&format!("{}/v1/grid/feeder", run.api))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(v["available"], true);
    let day = &v["day"];
    assert_eq!(day["slots"], 96, "the last day of slots");
    // The day's figures are the run's: the same slots, the same physics.
    let c = &run.outcome.community;
    let near =
        |a: &serde_json::Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-6 * b.abs().max(1.0);
    assert!(
        near(&day["peak_import_kw"], c.peak_import_kw),
        "{} against {}",
        day["peak_import_kw"],
        c.peak_import_kw
    );
    assert!(
        near(&day["losses_kwh"], c.losses_kwh),
        "{} against {}",
        day["losses_kwh"],
        c.losses_kwh
    );
    assert_eq!(
        day["islanded_slots"].as_u64().unwrap() as usize,
        c.outage_slots
    );
    assert!(v["buses"].as_u64().unwrap() > 5);
    let svg = ureq::get(&format!("{}/v1/charts/feeder.svg", run.api))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<circle"),
        "a diagram with buses"
    );
    rt.block_on(node.stop()).unwrap();
}
