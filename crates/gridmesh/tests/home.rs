//! `gridmesh home` against a virtual home of devices we did not write: pymodbus serving a SunSpec
//! PV inverter, a battery and the connection's meter, with physics (`scripts/interop/
//! virtual_home.py`: PV from the reference weather through pvlib, a battery whose energy
//! integrates the setpoints written to it, a meter from the home's balance), for a simulated day
//! at 600 times real time, against a node with a market, a time-of-use tariff, a grid operator's
//! envelopes and another home's agent.
//!
//! Asserted: the battery follows the plan; no export beyond the envelope; the home's bill is
//! lower than the same home's on the same slots without gridmesh (its battery on plain
//! self-consumption); every slot's readings settle; with the node killed mid-day the home falls
//! back to self-consumption and resumes when it returns; with the home killed the battery returns
//! to its own control within its reversion timeout.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, gridmesh, interop_script, new_key, python, stdout_json, Killed, NodeProc};
use serde_json::Value;

const SCALE: &str = "600";
/// Real seconds a setpoint holds on the device after the home's last write.
const REVERSION_S: u64 = 3;

/// The tariff: cheap nights, dear evenings (UTC slots of the day), feed-in low.
const TARIFF: [(u64, f64); 4] = [(0, 0.10), (28, 0.30), (68, 0.45), (88, 0.10)];
const FEED_IN: f64 = 0.05;

fn retail(slot: u64) -> f64 {
    let of_day = slot % 96;
    TARIFF
        .iter()
        .rev()
        .find(|(from, _)| *from <= of_day)
        .map_or(TARIFF[0].1, |t| t.1)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn start_node(data: &Path, genesis: &Path, port: u16) -> NodeProc {
    NodeProc::spawn(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--genesis",
            genesis.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--block-interval-ms",
            "100",
            "--time-scale",
            SCALE,
            "--empty-blocks",
        ]
        .map(String::from),
    )
}

#[test]
fn a_virtual_home_follows_its_plan_for_a_day_settles_every_slot_and_falls_back_without_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (owner_key, owner) = new_key(d, "owner");
    let (pv_key, _) = new_key(d, "pv");
    let (battery_key, _) = new_key(d, "battery");
    let (buyer_key, buyer) = new_key(d, "buyer");
    let (op_key, op) = new_key(d, "operator");
    let mut tariffs = String::new();
    for (from, price) in TARIFF {
        tariffs += &format!(
            "[[market.tariffs]]\nfrom_slot = {from}\nretail_per_kwh = \"{price:.2}\"\nfeed_in_per_kwh = \"{FEED_IN:.2}\"\n"
        );
    }
    let genesis = common::genesis_now(d, "home-e2e", &[&owner, &buyer, &op], Some(&op), &tariffs);
    let port = free_port();
    let data = d.join("data");
    // The chain's day starts at 19:00 UTC (the next after now): the home begins in the evening
    // peak and runs through a whole day from 22:00 to 22:00, where both homes' batteries are
    // spent, so the bills compare like for like. A time-scaled node's clock runs from the anchor
    // in its data dir.
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let day_ms = 86_400_000;
    let mut start_ms = wall_ms - wall_ms % day_ms + 19 * 3_600_000;
    if start_ms < wall_ms {
        start_ms += day_ms;
    }
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("clock-anchor"), format!("{wall_ms} {start_ms}\n")).unwrap();
    let first_slot = start_ms / 900_000;
    // 22:00 on the chain's first day, and the same a day later.
    let (from_slot, to_slot) = (first_slot + 12, first_slot + 12 + 96);
    let node = start_node(&data, &genesis, port);
    let url = node.url.clone();
    // At the reference weather's station: proof of generation checks PV against its sky.
    for (key, kind, kw) in [(&pv_key, "pv", "6"), (&battery_key, "battery", "5")] {
        let at = ("52.38", "13.07");
        common::register_keyed_device_at(&url, &owner_key, key, kind, kw, "street-1/home-1", at);
    }

    // The virtual home.
    let ports = [free_port(), free_port(), free_port()];
    let state_file = d.join("virtual-home.json");
    let mut args = vec![
        "--node".to_string(),
        url.clone(),
        "--time-scale".into(),
        SCALE.into(),
    ];
    for (flag, port) in ["--pv-port", "--battery-port", "--meter-port"]
        .iter()
        .zip(ports)
    {
        args.extend([flag.to_string(), port.to_string()]);
    }
    args.extend(["--state".into(), state_file.display().to_string()]);
    let _vh = common::start_ready_peer("virtual_home.py", &args, "the virtual home");

    // `home init --discover` walks the three devices' SunSpec maps.
    let init = d.join("discovered.toml");
    let mut args = vec![
        "home".to_string(),
        "init".into(),
        "--out".into(),
        init.display().to_string(),
    ];
    for p in ports {
        args.extend(["--discover".into(), format!("127.0.0.1:{p}")]);
    }
    let out = gridmesh(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = std::fs::read_to_string(&init).unwrap();
    for (section, port) in [
        ("[pv]", ports[0]),
        ("[battery]", ports[1]),
        ("[grid_meter]", ports[2]),
    ] {
        let at = found
            .find(section)
            .unwrap_or_else(|| panic!("no {section} in {found}"));
        assert!(
            found[at..].contains(&format!("sunspec = \"127.0.0.1:{port}\"")),
            "{section}: {found}"
        );
    }
    assert!(found.contains("gridmesh-virtual-home"), "{found}");

    // Another home's agent, buying.
    let plain = d.join("plain.toml");
    std::fs::write(
        &plain,
        "location = \"street-1/home-2\"\nannual_kwh = 5000\nseed = 4\n",
    )
    .unwrap();
    let _buyer = Killed(
        Command::new(env!("CARGO_BIN_EXE_gridmesh"))
            .args([
                "agent",
                "--key",
                &buyer_key,
                "--home",
                plain.to_str().unwrap(),
            ])
            .args([
                "--slots",
                "30",
                "--gate-margin-s",
                "300",
                "--poll-ms",
                "100",
            ])
            .args(["--node", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The grid operator allows no export from the home around noon of the next day.
    let capped: Vec<u64> = (first_slot + 5 + 44..first_slot + 5 + 48).collect();
    for s in &capped {
        stdout_json(&gridmesh(&[
            "tx",
            "envelope",
            "--slot",
            &s.to_string(),
            "--location",
            "street-1/home-1",
            "--import-kwh",
            "10",
            "--export-kwh",
            "0",
            "--key",
            &op_key,
            "--node",
            &url,
            "--json",
        ]));
    }

    // Home Assistant's broker.
    let broker = common::Mosquitto::start();

    // The home.
    let config = d.join("home.toml");
    std::fs::write(
        &config,
        format!(
            r#"node = "{url}"
key = "owner.key"
data_dir = "home-data"
time_scale = {SCALE}
poll_ms = 100
node_poll_ms = 100
# The community gateway's broker (samples), here the same as Home Assistant's.
mqtt = "127.0.0.1:{broker}"
[home]
location = "street-1/home-1"
annual_kwh = 4000
pv_kwp = 6
[home.battery]
capacity_kwh = 10
power_kw = 5
reserve_kwh = 1
[pv]
sunspec = "127.0.0.1:{}"
key = "pv.key"
[battery]
sunspec = "127.0.0.1:{}"
key = "battery.key"
[grid_meter]
sunspec = "127.0.0.1:{}"
[home_assistant]
mqtt = "127.0.0.1:{broker}"
[control]
reversion_s = {REVERSION_S}
gate_margin_s = 300
node_retry_s = 1
"#,
            ports[0],
            ports[1],
            ports[2],
            broker = broker.port
        ),
    )
    .unwrap();
    let home = Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        .args(["home", "run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut home = Killed(home);
    let status_file = d.join("home-data/status.json");
    let status = || read_json(&status_file).unwrap_or(Value::Null);
    let reached = |slot: u64| status()["slot"].as_u64().is_some_and(|s| s > slot);
    let day = Duration::from_secs(400);

    // Half a day, then the node dies: the home runs the house on its own.
    wait_until("half a day", day, || {
        home.alive("gridmesh home");
        reached(from_slot + 48)
    });
    assert_eq!(status()["mode"], "plan", "{}", status());
    node.kill9();
    wait_until("the home to fall back", Duration::from_secs(30), || {
        let s = status();
        s["mode"] == "self-consumption"
            && s["fallback_reason"]
                .as_str()
                .is_some_and(|r| r.contains("node is away"))
    });
    let fell_back = status();
    eprintln!("fell back: {}", fell_back["fallback_reason"]);
    let node = start_node(&data, &genesis, port);
    wait_until("the home to plan again", Duration::from_secs(60), || {
        status()["mode"] == "plan"
    });

    wait_until("the day to end", day, || {
        home.alive("gridmesh home");
        reached(to_slot + 1)
    });
    // Readings of the last slots reach the chain.
    wait_until("the queue to empty", Duration::from_secs(60), || {
        status()["readings_queued"].as_u64() <= Some(2)
    });
    let s = status();

    // Home Assistant finds the home: its discovery configs retained, its state published, and
    // the configs published again when HA comes online.
    let ha = Command::new(python())
        .arg(interop_script("ha_check.py"))
        .args(["--port", &broker.port.to_string(), "--wait", "2"])
        .output()
        .unwrap();
    assert!(
        ha.status.success(),
        "{}",
        String::from_utf8_lossy(&ha.stderr)
    );
    let ha: Value = serde_json::from_slice(&ha.stdout).unwrap();
    let configs = ha["configs"].as_object().unwrap();
    let config_of = |id: &str| {
        configs
            .iter()
            .find(|(t, _)| t.ends_with(&format!("/{id}/config")))
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no discovery config for {id}: {ha}"))
    };
    for id in [
        "grid_import",
        "grid_export",
        "pv_energy",
        "battery_charged",
        "battery_discharged",
    ] {
        let c = config_of(id);
        assert_eq!(c["device_class"], "energy", "{c}");
        assert_eq!(c["state_class"], "total_increasing", "{c}");
        assert_eq!(c["unit_of_measurement"], "kWh", "{c}");
    }
    assert_eq!(config_of("battery_soc")["device_class"], "battery");
    assert_eq!(
        ha["republished"].as_u64(),
        Some(configs.len() as u64),
        "{ha}"
    );
    let (_, state) = ha["states"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .expect("a state");
    assert!(state["grid_import"].as_f64().unwrap() > 0.0, "{state}");
    assert!(state["battery_soc"].as_f64().is_some(), "{state}");
    assert!(state["price_now"].as_f64().is_some(), "{state}");
    assert!(state["bill_today"].as_f64().is_some(), "{state}");
    assert!(
        ha["availability"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == "online"),
        "{ha}"
    );

    // Kill the home: the battery returns to its own control within its reversion timeout.
    let killed_at = Instant::now();
    home.0.kill().unwrap();
    home.0.wait().unwrap();
    wait_until(
        "the battery to revert",
        Duration::from_secs(REVERSION_S + 3),
        || read_json(&state_file).is_some_and(|v| v["storctl_mod"] == 0),
    );
    eprintln!(
        "the battery reverted {:.1} s after the home died (timeout {REVERSION_S} s)",
        killed_at.elapsed().as_secs_f64()
    );

    let report = &s["report"];
    assert_eq!(report["readings_refused"], 0, "{report}");
    assert_eq!(report["sells"], true, "{report}");
    assert!(report["orders_placed"].as_u64().unwrap() > 0, "{report}");
    let journal = read_json(&d.join("home-data/journal.json")).unwrap();
    let history = journal["history"].as_object().unwrap();
    let vh = read_json(&state_file).unwrap();
    let vslots = vh["slots"].as_object().unwrap();

    // The battery follows the plan: it holds the plan's exchange with the grid (0.1 kW + 10 %
    // in a slot's mean), absorbing only what the forecasts missed of the home's load and PV.
    let (mut planned, mut close) = (0, 0);
    let (mut battery_off, mut forecast_off) = (0.0, 0.0);
    for (slot, r) in history {
        let (Some(pb), Some(pg)) = (
            r["planned_battery_kw"].as_f64(),
            r["planned_grid_kw"].as_f64(),
        ) else {
            continue;
        };
        planned += 1;
        let battery = r["battery_kw"].as_f64().unwrap();
        let grid = (r["import_kwh"].as_f64().unwrap() - r["export_kwh"].as_f64().unwrap()) * 4.0;
        if (grid - pg).abs() <= 0.1 + 0.1 * pg.abs() {
            close += 1;
        } else {
            eprintln!("slot {slot}: planned grid {pg:.3} kW, battery {pb:.3}; measured {grid:.3}, {battery:.3}");
        }
        battery_off += (battery - pb).abs();
        // What the plan expected the home to draw beyond its PV, and what it drew.
        forecast_off += ((grid + battery) - (pg + pb)).abs();
    }
    eprintln!(
        "{close} of {planned} planned slots on the plan's grid exchange; the battery off its plan by {:.3} kW on average, the forecasts off the home by {:.3} kW",
        battery_off / planned as f64,
        forecast_off / planned as f64
    );
    assert!(planned >= 90, "{planned} planned slots");
    assert!(close * 100 >= planned * 90, "{close} of {planned}");
    assert!(
        battery_off <= forecast_off + 0.05 * planned as f64,
        "{battery_off} {forecast_off}"
    );

    // No export beyond the envelope.
    for s in &capped {
        let v = &vslots[&s.to_string()];
        assert!(
            v["export_kwh"].as_f64().unwrap() <= 0.01,
            "slot {s} exported {} kWh under a 0 kWh envelope",
            v["export_kwh"]
        );
    }

    // Every measured slot settles: the chain has the home's meter reading of it, equal to what
    // the home measured, and its device readings were accepted.
    let view = stdout_json(&gridmesh(&[
        "query", "home", "--key", &owner_key, "--slots", "300", "--node", &node.url, "--json",
    ]));
    let on_chain: std::collections::HashMap<u64, &Value> = view["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["slot"].as_u64().unwrap(), s))
        .collect();
    // The last slot's readings may still wait for the chain's clock to pass its end.
    let waiting: Vec<u64> = journal["queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["slot"].as_u64().unwrap())
        .collect();
    assert!(waiting.len() <= 2, "still queued: {waiting:?}");
    let mut settled = Vec::new();
    for (slot, r) in history {
        let slot: u64 = slot.parse().unwrap();
        if waiting.contains(&slot) {
            continue;
        }
        let c = on_chain
            .get(&slot)
            .unwrap_or_else(|| panic!("slot {slot} has no reading on the chain"));
        let kwh = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
        assert!(
            (kwh(&c["import_kwh"]) - r["import_kwh"].as_f64().unwrap()).abs() < 1e-3,
            "slot {slot}: {c} vs {r}"
        );
        settled.push(slot);
    }
    for dev in view["devices"].as_array().unwrap() {
        assert!(dev["held"].as_array().unwrap().is_empty(), "{dev}");
        assert!(
            // Pending: inside the correction window still.
            dev["readings_accepted"].as_u64().unwrap() + dev["readings_pending"].as_u64().unwrap()
                >= settled.len() as u64,
            "{dev}: {} slots",
            settled.len()
        );
    }

    // The bill: lower than the same home's on the same slots with its battery on plain
    // self-consumption (the virtual home runs that home beside it). Energy left in the battery
    // counts: more than the plain home's at the cheapest retail price, less at the dearest.
    let tokens = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let (mut bill, mut plain_bill) = (0.0, 0.0);
    let day: Vec<u64> = settled
        .iter()
        .copied()
        .filter(|s| (from_slot..to_slot).contains(s))
        .collect();
    assert_eq!(day.len(), 96, "a whole day settled from 22:00: {day:?}");
    for slot in &day {
        let c = on_chain[slot];
        bill += tokens(&c["utility_cost"]) - tokens(&c["utility_credit"]) + tokens(&c["p2p_paid"])
            - tokens(&c["p2p_received"]);
        let v = &vslots[&slot.to_string()];
        plain_bill += v["plain_import_kwh"].as_f64().unwrap() * retail(*slot)
            - v["plain_export_kwh"].as_f64().unwrap() * FEED_IN;
    }
    let soc = |slot: u64, key: &str| vslots[&slot.to_string()][key].as_f64().unwrap();
    let (first, last) = (day[0], *day.last().unwrap());
    let stored = (soc(last, "soc_end_kwh") - soc(last, "plain_soc_end_kwh"))
        - (soc(first - 1, "soc_end_kwh") - soc(first - 1, "plain_soc_end_kwh"));
    let stored_value = if stored > 0.0 {
        stored * 0.10
    } else {
        stored * 0.45
    };
    eprintln!(
        "the day from 22:00: bill {bill:.3} tokens with gridmesh (energy stored beyond the plain home's: {stored:.2} kWh, worth {stored_value:.3}), {plain_bill:.3} on plain self-consumption"
    );
    assert!(
        bill - stored_value < plain_bill,
        "gridmesh {bill:.3} - {stored_value:.3} vs plain {plain_bill:.3}"
    );
    assert!(fell_back["now"]["grid_kw"].is_number(), "{fell_back}");
}
