//! `gridmesh home` against a virtual home of devices we did not write: pymodbus serving a SunSpec
//! PV inverter, a battery and the connection's meter, and the `ocpp` package's charge point for
//! an EV, with physics (`scripts/interop/virtual_home.py`: PV from the reference weather through
//! pvlib, a battery whose energy integrates the setpoints written to it, an EV drawing what its
//! charging profiles allow, a meter from the home's balance), for a simulated day at 600 times
//! real time, against a node with a market, a time-of-use tariff, a grid operator's envelopes and
//! another home's agent.
//!
//! Asserted: the battery follows the plan; the EV has its energy by departure; no export beyond
//! the envelope; the home's bill is lower than the same home's on the same slots without
//! gridmesh (its battery on plain self-consumption, its EV charging at once); every slot's
//! readings settle; with the node killed mid-day the home falls back to self-consumption and
//! resumes when it returns; with the home killed the battery returns to its own control within
//! its reversion timeout. A second, shorter run has a charger without smart charging (the home
//! starts and stops it to the plan) and a grid meter read from a P1 bridge on MQTT (its registers
//! settle the slots), and islands the community (the home falls back to self-consumption and
//! plans again once reconnected).

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

/// A community's chain for the home: the owner with its PV, battery and EV charger registered,
/// a buyer, the grid operator, the tariff.
struct Chain {
    node: NodeProc,
    genesis: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    /// The chain's first slot: 19:00 UTC.
    first_slot: u64,
    owner_key: String,
    buyer_key: String,
    op_key: String,
}

fn chain(d: &Path, name: &str) -> Chain {
    let (owner_key, owner) = new_key(d, "owner");
    let (pv_key, _) = new_key(d, "pv");
    let (battery_key, _) = new_key(d, "battery");
    let (ev_key, _) = new_key(d, "ev");
    let (buyer_key, buyer) = new_key(d, "buyer");
    let (op_key, op) = new_key(d, "operator");
    let mut tariffs = String::new();
    for (from, price) in TARIFF {
        tariffs += &format!(
            "[[market.tariffs]]\nfrom_slot = {from}\nretail_per_kwh = \"{price:.2}\"\nfeed_in_per_kwh = \"{FEED_IN:.2}\"\n"
        );
    }
    let genesis = common::genesis_now(d, name, &[&owner, &buyer, &op], Some(&op), &tariffs);
    let port = free_port();
    let data = d.join("data");
    // The chain's day starts at 19:00 UTC (the next after now). A time-scaled node's clock runs
    // from the anchor in its data dir.
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
    let node = start_node(&data, &genesis, port);
    // At the reference weather's station: proof of generation checks PV against its sky.
    for (key, kind, kw) in [
        (&pv_key, "pv", "6"),
        (&battery_key, "battery", "5"),
        (&ev_key, "ev-charger", "11"),
    ] {
        let at = ("52.38", "13.07");
        common::register_keyed_device_at(
            &node.url,
            &owner_key,
            key,
            kind,
            kw,
            "street-1/home-1",
            at,
        );
    }
    Chain {
        node,
        genesis,
        data,
        port,
        first_slot: start_ms / 900_000,
        owner_key,
        buyer_key,
        op_key,
    }
}

/// The EV: plugged in at 23:00, needing 20 kWh by 07:00.
const EV_NEED_KWH: f64 = 20.0;
const CHARGE_POINT: &str = "EV-0001";

/// The virtual home's devices: its Modbus ports (PV, battery, meter) and the charger's
/// central-system port (the home's), and its state file.
struct VirtualHome {
    _peer: Killed,
    ports: [u16; 3],
    ev_port: u16,
    /// The heat pump's coil.
    heat_pump_port: u16,
    state: std::path::PathBuf,
}

/// The shiftable loads as the virtual home has them: a boiler switched over MQTT, a heat pump on
/// a Modbus coil (`[[home.loads]]` and `[[loads]]`).
fn loads_config(broker: u16, heat_pump_port: u16) -> String {
    format!(
        r#"[[home.loads]]
name = "boiler"
power_kw = 2
energy_kwh = 3
earliest_hour = 10
latest_hour = 16
[[home.loads]]
name = "heat_pump"
power_kw = 1.5
energy_kwh = 4
earliest_hour = 0
latest_hour = 6
[[loads]]
name = "boiler"
mqtt = {{ broker = "127.0.0.1:{broker}", topic = "cmnd/boiler/POWER" }}
[[loads]]
name = "heat_pump"
modbus = {{ address = "127.0.0.1:{heat_pump_port}", coil = 0 }}
"#
    )
}

/// `meter_broker`: the meter is also published on that broker, as a P1 bridge does;
/// `loads_broker`: the home has its switched loads, the boiler's switch on that broker;
/// `heat`: a 3 kW heat pump heats the building, its room sensor read on that broker, its power
/// set there (`true`) or switched on its Modbus coil (`false`); `tank`: a hot-water tank whose
/// heater's switch and sensor are on that broker.
/// The EV charger of a virtual home: the OCPP version it speaks, and whether it takes charging
/// profiles or is started and stopped.
struct Charger {
    ocpp: &'static str,
    start_stop: bool,
}

fn virtual_home(
    d: &Path,
    url: &str,
    charger: Charger,
    meter_broker: Option<u16>,
    loads_broker: Option<u16>,
    (heat, tank): (Option<(u16, bool)>, Option<u16>),
) -> VirtualHome {
    let ports = [free_port(), free_port(), free_port()];
    let heat_pump_port = free_port();
    let ev_port = free_port();
    let state = d.join("virtual-home.json");
    let mut args = vec![
        "--node".to_string(),
        url.to_string(),
        "--time-scale".into(),
        SCALE.into(),
    ];
    for (flag, port) in ["--pv-port", "--battery-port", "--meter-port"]
        .iter()
        .zip(ports)
    {
        args.extend([flag.to_string(), port.to_string()]);
    }
    args.extend([
        "--state".into(),
        state.display().to_string(),
        "--ev-url".into(),
        format!("ws://127.0.0.1:{ev_port}/ocpp/{CHARGE_POINT}"),
        "--ev-need-kwh".into(),
        EV_NEED_KWH.to_string(),
    ]);
    args.extend(["--ev-ocpp".into(), charger.ocpp.into()]);
    if charger.start_stop {
        args.push("--ev-start-stop".into());
    }
    if let Some(port) = meter_broker {
        args.extend(["--meter-mqtt".into(), format!("127.0.0.1:{port}")]);
    }
    if let Some(port) = loads_broker {
        args.extend([
            "--boiler-mqtt".into(),
            format!("127.0.0.1:{port}"),
            "--heat-pump-port".into(),
            heat_pump_port.to_string(),
            "--switch-revert-s".into(),
            REVERSION_S.to_string(),
        ]);
    }
    if let Some((port, setpoint)) = heat {
        args.extend([
            "--indoor-mqtt".into(),
            format!("127.0.0.1:{port}"),
            "--heat-pump-kw".into(),
            "3".into(),
            "--switch-revert-s".into(),
            REVERSION_S.to_string(),
        ]);
        if setpoint {
            args.push("--heat-pump-setpoint".into());
        } else {
            args.extend(["--heat-pump-port".into(), heat_pump_port.to_string()]);
        }
    }
    if let Some(port) = tank {
        args.extend([
            "--tank-mqtt".into(),
            format!("127.0.0.1:{port}"),
            "--switch-revert-s".into(),
            REVERSION_S.to_string(),
        ]);
    }
    VirtualHome {
        _peer: common::start_ready_peer("virtual_home.py", &args, "the virtual home"),
        ports,
        ev_port,
        heat_pump_port,
        state,
    }
}

/// The home's config for the virtual home: `extra` goes at the top level (before the tables).
/// The grid meter is the SunSpec one, or with `meter_broker` the P1 bridge's topics.
fn home_config(
    d: &Path,
    url: &str,
    vh: &VirtualHome,
    extra: &str,
    tables: &str,
    meter_broker: Option<u16>,
) -> std::path::PathBuf {
    let config = d.join("home.toml");
    let meter = match meter_broker {
        None => format!("sunspec = \"127.0.0.1:{}\"", vh.ports[2]),
        Some(port) => format!(
            "[grid_meter.mqtt]\nbroker = \"127.0.0.1:{port}\"\nimport_topics = [\"p1/electricity_delivered_1\", \"p1/electricity_delivered_2\"]\nexport_topics = [\"p1/electricity_returned\"]\nstale_s = 5"
        ),
    };
    std::fs::write(
        &config,
        format!(
            r#"node = "{url}"
key = "owner.key"
data_dir = "home-data"
time_scale = {SCALE}
poll_ms = 100
node_poll_ms = 100
{extra}
[home]
location = "street-1/home-1"
annual_kwh = 4000
pv_kwp = 6
[home.battery]
capacity_kwh = 10
power_kw = 5
reserve_kwh = 1
[home.ev]
power_kw = 11
energy_kwh = {EV_NEED_KWH}
arrival_hour = 23
departure_hour = 7
[pv]
sunspec = "127.0.0.1:{}"
key = "pv.key"
[battery]
sunspec = "127.0.0.1:{}"
key = "battery.key"
[grid_meter]
{meter}
[ev]
ocpp_listen = "127.0.0.1:{}"
charge_point = "{CHARGE_POINT}"
key = "ev.key"
[control]
reversion_s = {REVERSION_S}
gate_margin_s = 300
node_retry_s = 1
{tables}"#,
            vh.ports[0], vh.ports[1], vh.ev_port,
        ),
    )
    .unwrap();
    config
}

fn start_home(config: &Path) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_gridmesh"))
            .args(["home", "run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_virtual_home_follows_its_plan_for_a_day_settles_every_slot_and_falls_back_without_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Chain {
        node,
        genesis,
        data,
        port,
        first_slot,
        owner_key,
        buyer_key,
        op_key,
    } = chain(d, "home-e2e");
    let url = node.url.clone();
    // The home begins in the evening peak and runs through a whole day from 22:00 to 22:00,
    // where both homes' batteries are spent and the EV is away, so the bills compare like for
    // like.
    let (from_slot, to_slot) = (first_slot + 12, first_slot + 12 + 96);

    // Home Assistant's broker; the boiler's switch is on it too.
    let broker = common::Mosquitto::start();
    // Its charger speaks OCPP 2.0.1 (the other homes' chargers 1.6J).
    let charger = Charger {
        ocpp: "2.0.1",
        start_stop: false,
    };
    let vh = virtual_home(d, &url, charger, None, Some(broker.port), (None, None));
    let (ports, state_file) = (vh.ports, vh.state.clone());

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

    // The home; the community gateway's broker (samples) is here the same as Home Assistant's.
    let config = home_config(
        d,
        &url,
        &vh,
        &format!("mqtt = \"127.0.0.1:{}\"", broker.port),
        &format!(
            "[home_assistant]\nmqtt = \"127.0.0.1:{}\"\n{}",
            broker.port,
            loads_config(broker.port, vh.heat_pump_port)
        ),
        None,
    );
    let mut home = start_home(&config);
    let status_file = d.join("home-data/status.json");
    let status = || read_json(&status_file).unwrap_or(Value::Null);
    let reached = |slot: u64| status()["slot"].as_u64().is_some_and(|s| s > slot);
    let day = Duration::from_secs(400);

    // Half a day, then the node dies: the home runs the house on its own.
    wait_until("half a day", day, || {
        home.alive("gridmesh home");
        reached(from_slot + 48)
    });
    let s = status();
    assert_eq!(s["mode"], "plan", "{s}");
    // The charger came in on 2.0.1 and took the plan as charging profiles.
    assert_eq!(s["setpoints"]["ev_ocpp"], "2.0.1", "{s}");
    assert_eq!(s["setpoints"]["ev_control"], "profile", "{s}");
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
        "ev_energy",
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
    let (mut planned, mut close, mut at_bound) = (0, 0, 0);
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
        // A battery full (or at its reserve) that the plan kept there has nothing to absorb a
        // forecast error with (or to cover one): the error lands on the grid.
        let soc = r["soc_kwh"].as_f64().unwrap_or(5.0);
        let pinned = pb.abs() < 0.05 && !(1.05..=9.95).contains(&soc);
        if (grid - pg).abs() <= 0.1 + 0.1 * pg.abs() {
            close += 1;
        } else if pinned {
            at_bound += 1;
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
    eprintln!("{at_bound} slots off the plan's exchange with the battery full or at its reserve");
    assert!(
        close * 100 >= (planned - at_bound) * 90,
        "{close} of {planned} ({at_bound} at a bound)"
    );
    assert!(
        at_bound * 100 <= planned * 20,
        "{at_bound} of {planned} at a bound"
    );
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

    // The EV: plugged in at 23:00 and gone at 07:00 with its energy; the charger was driven by
    // profiles, and what it drew followed the plan over the night.
    let ev = &vh["ev"];
    let session = &ev["sessions"][0];
    eprintln!(
        "the EV's night: {session}; the charger received {}",
        ev["received"]
    );
    assert!(session["departed_ms"].is_number(), "{ev}");
    assert!(
        session["charged_kwh"].as_f64().unwrap() >= EV_NEED_KWH - 0.2,
        "the EV left short: {session}"
    );
    assert!(ev["received"]["profiles"].as_u64().unwrap() > 10, "{ev}");
    assert_eq!(ev["received"]["rejected"], 0, "{ev}");
    let (mut ev_planned, mut ev_drawn) = (0.0, 0.0);
    for (slot, r) in history {
        if let Some(p) = r["planned_ev_kw"].as_f64() {
            ev_planned += p / 4.0;
            ev_drawn += vslots[slot]["ev_kwh"].as_f64().unwrap();
        }
    }
    eprintln!("the EV: {ev_planned:.2} kWh planned in the slots the home followed a plan, {ev_drawn:.2} kWh drawn");
    assert!(ev_planned > EV_NEED_KWH * 0.8, "{ev_planned}");
    assert!(
        (ev_drawn - ev_planned).abs() <= 0.03 * ev_planned,
        "{ev_drawn} drawn, {ev_planned} planned"
    );

    // The switched loads: each ran its day's energy inside its window (after the node died at
    // 10:00 the boiler ran by its window until the node was back, then by the plan), and where
    // the home followed a plan they drew what it planned.
    let switched = &vh["switched"];
    let day2 = ((from_slot + 8) / 96).to_string();
    for (name, need) in [("boiler", 3.0), ("heat_pump", 4.0)] {
        let sw = &switched[name];
        let ran = sw["days"][&day2].as_f64().unwrap_or(0.0);
        eprintln!(
            "{name}: {ran:.2} kWh in its window, {} outside, {} commands",
            sw["outside_kwh"], sw["commands"]
        );
        assert!(ran >= need - 0.1, "{name} ran {ran} of {need} kWh: {sw}");
        assert!(ran <= need + 0.2, "{name} ran {ran} of {need} kWh: {sw}");
        assert!(sw["outside_kwh"].as_f64().unwrap() <= 0.1, "{name}: {sw}");
    }
    let (mut loads_planned, mut loads_drawn) = (0.0, 0.0);
    for (slot, r) in history {
        if let Some(p) = r["planned_loads_kw"].as_f64() {
            loads_planned += p / 4.0;
            loads_drawn += vslots[slot]["switched_kwh"].as_f64().unwrap();
        }
    }
    eprintln!("the switched loads: {loads_planned:.2} kWh planned where the home followed a plan, {loads_drawn:.2} kWh drawn");
    assert!(
        (loads_drawn - loads_planned).abs() <= 0.05 * loads_planned + 0.2,
        "{loads_drawn} drawn, {loads_planned} planned"
    );

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
    let (mut settled, mut charging) = (Vec::new(), 0u64);
    let (mut with_plan, mut as_ordered) = (0, 0);
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
        charging += u64::from(r["ev_kw"].as_f64().unwrap() > 0.0);
        // The node's view of the plan (what the home ordered, the dashboard's "planned") is the
        // plan the home followed.
        if let Some(pg) = r["planned_grid_kw"].as_f64() {
            let ordered = kwh(&c["ordered_buy_kwh"]) - kwh(&c["ordered_sell_kwh"]);
            with_plan += 1;
            if (ordered - pg / 4.0).abs() <= 0.02 + 0.05 * (pg / 4.0).abs() {
                as_ordered += 1;
            } else {
                eprintln!(
                    "slot {slot}: ordered {ordered:.3} kWh, planned {:.3}",
                    pg / 4.0
                );
            }
        }
    }
    eprintln!("{as_ordered} of {with_plan} planned slots ordered as planned");
    assert!(
        as_ordered * 100 >= with_plan * 80,
        "{as_ordered} of {with_plan}"
    );
    for dev in view["devices"].as_array().unwrap() {
        assert!(dev["held"].as_array().unwrap().is_empty(), "{dev}");
        // The charger reports while a car is plugged in.
        let due = if dev["kind"] == "ev-charger" {
            charging
        } else {
            settled.len() as u64
        };
        assert!(
            // Pending: inside the correction window still.
            dev["readings_accepted"].as_u64().unwrap() + dev["readings_pending"].as_u64().unwrap()
                >= due.max(1),
            "{dev}: {due} slots"
        );
    }

    // The bill: lower than the same home's on the same slots with its battery on plain
    // self-consumption (the virtual home runs that home beside it). Energy left in the battery
    // counts: more than the plain home's at the cheapest retail price, less at the dearest.
    let tokens = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let (mut bill, mut plain_bill, mut ev_kwh, mut plain_ev_kwh) = (0.0, 0.0, 0.0, 0.0);
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
        ev_kwh += v["ev_kwh"].as_f64().unwrap() + v["switched_kwh"].as_f64().unwrap();
        plain_ev_kwh +=
            v["plain_ev_kwh"].as_f64().unwrap() + v["plain_switched_kwh"].as_f64().unwrap();
    }
    // The same EV and switched-load energy in both: the night's session and the loads' windows
    // lie inside the day.
    assert!(
        (ev_kwh - plain_ev_kwh).abs() < 0.3,
        "{ev_kwh} {plain_ev_kwh}"
    );
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

#[test]
fn a_charger_without_smart_charging_is_started_and_stopped_a_p1_meter_settles_the_slots_and_an_island_means_self_consumption(
) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = chain(d, "home-ev-start-stop");
    // The grid meter comes over MQTT here, as from a P1/DSMR bridge.
    let broker = common::Mosquitto::start();
    let charger = Charger {
        ocpp: "1.6",
        start_stop: true,
    };
    let vh = virtual_home(
        d,
        &c.node.url,
        charger,
        Some(broker.port),
        None,
        (None, None),
    );
    let config = home_config(d, &c.node.url, &vh, "", "", Some(broker.port));
    let mut home = start_home(&config);
    let status_file = d.join("home-data/status.json");
    let status = || read_json(&status_file).unwrap_or(Value::Null);
    // From 19:00 to 03:00: the EV comes at 23:00.
    let until = c.first_slot + 32;
    wait_until("03:00", Duration::from_secs(150), || {
        home.alive("gridmesh home");
        status()["slot"].as_u64().is_some_and(|s| s >= until)
    });
    let s = status();
    assert_eq!(s["setpoints"]["ev_control"], "start-stop", "{s}");
    assert_eq!(s["setpoints"]["ev_ocpp"], "1.6", "{s}");
    assert_eq!(s["devices"]["ev"]["connected"], true, "{s}");
    let v = read_json(&vh.state).unwrap();
    let ev = &v["ev"];
    eprintln!("the EV: {}", ev["sessions"][0]);
    let received = &ev["received"];
    assert!(received["rejected"].as_u64().unwrap() >= 1, "{ev}");
    assert!(received["remote_start"].as_u64().unwrap() >= 1, "{ev}");
    assert!(received["remote_stop"].as_u64().unwrap() >= 1, "{ev}");
    // Charged, four hours after it came, by starts and stops.
    let charged = ev["sessions"][0]["charged_kwh"].as_f64().unwrap();
    assert!(charged >= EV_NEED_KWH - 0.5, "{ev}");
    // Where the plan gave the EV nothing, the charger was stopped within about two chain
    // minutes (the home's poll and the charger's meter values, a minute each).
    let journal = read_json(&d.join("home-data/journal.json")).unwrap();
    let vslots = v["slots"].as_object().unwrap();
    let mut idle = 0;
    for (slot, r) in journal["history"].as_object().unwrap() {
        let (Some(p), Some(drawn)) = (
            r["planned_ev_kw"].as_f64(),
            vslots.get(slot).and_then(|v| v["ev_kwh"].as_f64()),
        ) else {
            continue;
        };
        if p == 0.0 {
            idle += 1;
            assert!(
                drawn <= 0.45,
                "slot {slot}: {drawn} kWh drawn, none planned"
            );
        } else {
            assert!(
                drawn <= p / 4.0 + 0.45,
                "slot {slot}: {drawn} kWh drawn, {p} kW planned"
            );
        }
    }
    assert!(idle > 0, "no slot planned the EV idle");

    // The P1 meter's registers settle the slots: the home's readings are committed, none
    // refused, and each slot's import is what the meter counted in it (1 Wh registers).
    assert_eq!(s["devices"]["grid_meter"]["connected"], true, "{s}");
    let report = &s["report"];
    assert_eq!(report["readings_refused"], 0, "{report}");
    assert!(
        report["readings_committed"].as_u64().unwrap() >= 20,
        "{report}"
    );
    let mut compared = 0;
    for (slot, r) in journal["history"].as_object().unwrap() {
        let Some(v) = vslots.get(slot) else { continue };
        // Registers read at the polls around the slot's ends: a poll's worth of energy apart.
        let (measured, metered) = (
            r["import_kwh"].as_f64().unwrap(),
            v["import_kwh"].as_f64().unwrap(),
        );
        assert!(
            (measured - metered).abs() <= 0.05 + 0.1 * metered,
            "slot {slot}: {measured} kWh read from P1, {metered} kWh metered"
        );
        compared += 1;
    }
    assert!(compared >= 20, "{compared}");

    // The community islands: the home stops trading with the grid and runs on
    // self-consumption (the EV at its minimum rate), and plans again once reconnected.
    let grid_event = |event: &str| {
        stdout_json(&gridmesh(&[
            "tx",
            "grid-event",
            "--event",
            event,
            "--key",
            &c.op_key,
            "--node",
            &c.node.url,
            "--json",
        ]))
    };
    grid_event("islanded");
    wait_until(
        "the home to see the island",
        Duration::from_secs(30),
        || {
            let s = status();
            s["mode"] == "self-consumption"
                && s["fallback_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("islanded"))
        },
    );
    grid_event("resynchronising");
    grid_event("reconnected");
    wait_until("the home to plan again", Duration::from_secs(30), || {
        status()["mode"] == "plan"
    });
}

/// What a run through the night measured of a heat pump's store, per planned slot: the plan's
/// and the virtual device's energy, the store's extremes, and the device's energy per tariff
/// band, (kWh, slots): the evening at 0.45, the night at 0.10, the day at 0.30.
struct ThermalRun {
    planned_kwh: f64,
    drawn_kwh: f64,
    slots: usize,
    coldest_c: f64,
    warmest_c: f64,
    evening: (f64, i32),
    night: (f64, i32),
    day: (f64, i32),
    status: Value,
    virtual_home: Value,
}

/// Runs the home on the virtual home from 19:00 through the dear evening and the cheap night to
/// 09:00, with a heat pump heating the house (`heat`: its power set over MQTT, or switched on its
/// Modbus coil) or the hot-water tank (`tank`). `tables(broker port, virtual home)`: the device's
/// tables. Reads each planned slot of the journal by the device's keys: the plan's power, and the
/// virtual home's energy, store extremes and the journal's temperature, which must stay in
/// `within_c`.
fn run_through_the_night(
    name: &str,
    (heat, tank): (Option<bool>, bool),
    tables: impl Fn(u16, &VirtualHome) -> String,
    [planned, drawn, min_c, max_c, at_c]: [&str; 5],
    within_c: std::ops::Range<f64>,
) -> ThermalRun {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Chain {
        node, first_slot, ..
    } = chain(d, name);
    let url = node.url.clone();
    let broker = common::Mosquitto::start();
    let devices = (heat.map(|s| (broker.port, s)), tank.then_some(broker.port));
    let charger = Charger {
        ocpp: "1.6",
        start_stop: false,
    };
    let vh = virtual_home(d, &url, charger, None, None, devices);
    let config = home_config(d, &url, &vh, "", &tables(broker.port, &vh), None);
    let mut home = start_home(&config);
    let status_file = d.join("home-data/status.json");
    let status = || read_json(&status_file).unwrap_or(Value::Null);
    let until = first_slot + 56;
    wait_until("the morning", Duration::from_secs(300), || {
        home.alive("gridmesh home");
        status()["slot"].as_u64().is_some_and(|s| s > until)
    });
    let journal = read_json(&d.join("home-data/journal.json")).unwrap();
    let virtual_home = read_json(&vh.state).unwrap();
    let mut run = ThermalRun {
        planned_kwh: 0.0,
        drawn_kwh: 0.0,
        slots: 0,
        coldest_c: f64::MAX,
        warmest_c: f64::MIN,
        evening: (0.0, 0),
        night: (0.0, 0),
        day: (0.0, 0),
        status: status(),
        virtual_home: Value::Null,
    };
    let vslots = virtual_home["slots"].as_object().unwrap();
    for (slot, r) in journal["history"].as_object().unwrap() {
        let Some(p) = r[planned].as_f64() else {
            continue;
        };
        let v = &vslots[slot];
        let kwh = v[drawn].as_f64().unwrap();
        run.planned_kwh += p / 4.0;
        run.drawn_kwh += kwh;
        run.slots += 1;
        run.coldest_c = run.coldest_c.min(v[min_c].as_f64().unwrap());
        run.warmest_c = run.warmest_c.max(v[max_c].as_f64().unwrap());
        let band = match retail(slot.parse().unwrap()) {
            p if p > 0.4 => &mut run.evening,
            p if p < 0.2 => &mut run.night,
            _ => &mut run.day,
        };
        band.0 += kwh;
        band.1 += 1;
        assert!(
            r[at_c].as_f64().is_some_and(|c| within_c.contains(&c)),
            "slot {slot}: {r}"
        );
    }
    run.virtual_home = virtual_home;
    run
}

/// A heat pump heating the house (`[home.heat_pump]`), reading the room sensor, given its power
/// over MQTT or switched on and off on a Modbus coil: the plan heats the virtual building (its own
/// model, at its own outdoor temperature, not the planner's forecast) within the comfort band, more
/// in the cheap night than in the dear evening; the heat pump draws what the plan asks where the
/// band allows; the journal and the status show the indoor temperature.
fn a_heat_pump_keeps_the_house_within_its_band(setpoint: bool) {
    let tables = |port: u16, vh: &VirtualHome| {
        let drive = if setpoint {
            format!(
                "setpoint = {{ broker = \"127.0.0.1:{port}\", topic = \"heatpump/set/power_w\" }}"
            )
        } else {
            format!(
                "modbus = {{ address = \"127.0.0.1:{}\", coil = 0 }}",
                vh.heat_pump_port
            )
        };
        format!(
            r#"[home.heat_pump]
floor_m2 = 120
insulation = "average"
max_power_kw = 3
comfort_c = [20, 22]
[heat_pump]
{drive}
indoor = {{ broker = "127.0.0.1:{port}", topic = "home/indoor/temperature", field = "temperature" }}
"#
        )
    };
    let keys = [
        "planned_heat_pump_kw",
        "heat_kwh",
        "indoor_min_c",
        "indoor_max_c",
        "indoor_c",
    ];
    let name = "home-heat";
    let r = run_through_the_night(name, (Some(setpoint), false), tables, keys, 19.0..23.0);
    let ThermalRun {
        planned_kwh,
        drawn_kwh,
        slots,
        evening,
        night,
        ..
    } = r;
    let per_slot = |(kwh, n): (f64, i32)| kwh / f64::from(n.max(1));
    eprintln!(
        "{slots} planned slots: {planned_kwh:.2} kWh of heating planned, {drawn_kwh:.2} drawn; {:.2}-{:.2} °C; {:.3} kWh a slot in the evening, {:.3} at night; {} setpoints",
        r.coldest_c,
        r.warmest_c,
        per_slot(evening),
        per_slot(night),
        r.virtual_home["building"]["setpoints"]
    );
    assert!(slots >= 40, "{slots} planned slots");
    assert!(planned_kwh > 5.0, "{planned_kwh}");
    // A setpoint is the plan's power; a switch runs each slot's planned energy at full power,
    // and the band's guard adds a little where the room dips before the slot's end.
    let over = if setpoint { 0.1 } else { 0.3 };
    assert!(
        drawn_kwh >= 0.9 * planned_kwh - 0.5 && drawn_kwh <= (1.0 + over) * planned_kwh + 0.5,
        "{drawn_kwh} drawn, {planned_kwh} planned"
    );
    assert!(
        r.coldest_c >= 19.8 && r.warmest_c <= 22.3,
        "{}-{}",
        r.coldest_c,
        r.warmest_c
    );
    assert!(evening.1 > 4 && night.1 > 4, "{evening:?} {night:?}");
    assert!(
        per_slot(night) > per_slot(evening),
        "heat moved to the cheap night: {night:?} against {evening:?}"
    );
    let s = &r.status;
    assert_eq!(s["devices"]["heat_pump"]["connected"], true, "{s}");
    assert!(
        s["now"]["indoor_c"]
            .as_f64()
            .is_some_and(|c| (19.5..22.5).contains(&c)),
        "{s}"
    );
}

#[test]
fn a_heat_pump_given_its_power_by_the_plan_keeps_the_house_within_its_band() {
    a_heat_pump_keeps_the_house_within_its_band(true);
}

#[test]
fn a_heat_pump_switched_on_and_off_by_the_plan_keeps_the_house_within_its_band() {
    a_heat_pump_keeps_the_house_within_its_band(false);
}

/// A hot-water tank (`[home.hot_water]`) heated by a heat-pump water heater switched over MQTT,
/// its temperature read from the tank's sensor: from 19:00 through the dear evening and the cheap
/// night to 09:00 (the evening's and the morning's draws), the virtual tank (its own model, at its
/// own outdoor temperature) stays within its band, the heater runs in the dear evening only what
/// the band needs, draws what the plan asks, and the journal and the status show the tank.
#[test]
fn a_hot_water_tank_is_heated_within_its_band_and_not_in_the_dear_evening() {
    let tables = |port: u16, _: &VirtualHome| {
        format!(
            r#"[home.hot_water]
litres = 200
kwh_per_day = 6
band_c = [45, 60]
max_power_kw = 2
[hot_water]
mqtt = {{ broker = "127.0.0.1:{port}", topic = "cmnd/water-heater/POWER" }}
tank = {{ broker = "127.0.0.1:{port}", topic = "water-heater/tank", field = "temperature" }}
"#
        )
    };
    let keys = [
        "planned_hot_water_kw",
        "water_kwh",
        "tank_min_c",
        "tank_max_c",
        "tank_c",
    ];
    let r = run_through_the_night("home-tank", (None, true), tables, keys, 44.0..61.0);
    let ThermalRun {
        planned_kwh,
        drawn_kwh,
        slots,
        evening,
        night,
        day,
        ..
    } = r;
    eprintln!(
        "{slots} planned slots: {planned_kwh:.2} kWh of hot water heating planned, {drawn_kwh:.2} drawn; tank {:.2}-{:.2} °C; evening {evening:?}, night {night:?}, morning {day:?}; {} switch commands",
        r.coldest_c,
        r.warmest_c,
        r.virtual_home["tank"]["commands"]
    );
    assert!(slots >= 40, "{slots} planned slots");
    // The day's draws need about 1.5 kWh of heat over the night and morning: at a COP of 2.4
    // about 0.6 kWh of electricity at least.
    assert!(planned_kwh > 0.5, "{planned_kwh}");
    // A switch runs each slot's planned energy at full power. The plan holds the band's low
    // edge at slot ends, and the band's guard adds full power where the tank dips below it: at
    // this time scale a poll is a chain minute (33 Wh at 2 kW) and the sensor's reading up to two
    // minutes old, as for the heat pump's house.
    assert!(
        drawn_kwh >= 0.9 * planned_kwh - 0.3 && drawn_kwh <= 1.3 * planned_kwh + 0.5,
        "{drawn_kwh} drawn, {planned_kwh} planned"
    );
    // A switch that runs a slot's energy first dips below the band's edge before the slot's end,
    // until the guard switches it on; a 2 kW heater lifts 200 l by 0.4 K a minute.
    assert!(
        r.coldest_c >= 44.0 && r.warmest_c <= 61.0,
        "{}-{}",
        r.coldest_c,
        r.warmest_c
    );
    assert!(
        evening.1 > 4 && night.1 > 4 && day.1 > 4,
        "{evening:?} {night:?}"
    );
    // At the dear evening's price the heater runs only what holds the tank at the band's low
    // edge through the evening's draw: 2 kWh drawn from 19:00 to 21:00 and 0.1 kWh lost, less
    // the 1.16 kWh the tank held above 45 °C at 50 °C, at a COP of 2.4: 0.39 kWh (a water heater
    // on its thermostat at 55-60 °C would run 1.3 kWh). The morning's draw is the battery's and
    // the night's to share (the battery charges at 0.10 too), so no split is asserted there.
    assert!(evening.0 < 0.6, "{evening:?}");
    let s = &r.status;
    assert_eq!(s["devices"]["hot_water"]["connected"], true, "{s}");
    assert!(
        s["now"]["tank_c"]
            .as_f64()
            .is_some_and(|c| (44.0..61.0).contains(&c)),
        "{s}"
    );
}
