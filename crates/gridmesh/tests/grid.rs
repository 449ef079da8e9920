//! `gridmesh grid powerflow` through the real binary.

mod common;

use std::path::PathBuf;

use common::{gridmesh, stdout_json};

#[test]
fn powerflow_on_the_ieee_33_bus_feeder() {
    let dir = gridmesh_refdata::require("grid");
    let case = dir.join("case33bw.m");
    let r = stdout_json(&gridmesh(&[
        "grid",
        "powerflow",
        "--case",
        case.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(r["converged"], true);
    assert_eq!(r["min_vm"]["bus"], 18);
    assert!((r["min_vm"]["vm_pu"].as_f64().unwrap() - 0.9131).abs() < 5e-5);
    assert!((r["losses_kw"].as_f64().unwrap() - 202.7).abs() < 0.05);
    assert_eq!(r["vm_pu"].as_object().unwrap().len(), 33);
    assert_eq!(r["vm_pu"]["1"].as_f64(), Some(1.0));
    // A feeder described in TOML solves too: the example street's 20 kW of forecast load.
    let feeder = common::congestion_feeder();
    let r = stdout_json(&gridmesh(&[
        "grid",
        "powerflow",
        "--case",
        feeder.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(r["converged"], true);
    assert_eq!(r["vm_pu"].as_object().unwrap().len(), 22);
    assert!(r["overloaded_branches"].as_array().unwrap().is_empty());
    // A file that is not a case: a clear error, non-zero exit.
    let scratch = tempfile::tempdir().unwrap();
    let not_a_case = scratch.path().join("notes.m");
    std::fs::write(&not_a_case, "% just a comment\nx = [1 2 3];\n").unwrap();
    let out = gridmesh(&["grid", "powerflow", "--case", not_a_case.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mpc.version"));
    let out = gridmesh(&["grid", "powerflow", "--case", "Cargo.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("feeder TOML"));
}

/// The transformer-overload example of `examples/congestion`: cleared without the grid, 20 EVs
/// and the utility drive a 100 kVA transformer far over its rating; with operating envelopes the
/// same market stays within every limit (checked by power flow), and the welfare lost is reported.
#[test]
fn grid_aware_clearing_keeps_the_transformer_within_its_rating() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/congestion");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "market".to_string(),
            "clear".into(),
            "--orders".into(),
            dir.join("orders.json").to_string_lossy().into_owned(),
            "--feeder".into(),
            dir.join("feeder.toml").to_string_lossy().into_owned(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        gridmesh(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let r = stdout_json(&run(&["--json"]));
    let free = &r["unconstrained"];
    let bound = &r["constrained"];
    assert!(free["transformer_loading_pct"].as_f64().unwrap() > 200.0);
    assert!(free["violation"].is_string());
    let named: Vec<&str> = free["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        named.iter().any(|v| v.starts_with("branch pcc-lv carries")),
        "the transformer overload, by name: {named:?}"
    );
    assert!(bound["violations"].as_array().unwrap().is_empty());
    let loading = bound["transformer_loading_pct"].as_f64().unwrap();
    assert!(loading <= 100.0 && loading > 80.0, "{loading}");
    assert!(bound["violation"].is_null(), "{}", bound["violation"]);
    assert!(bound["min_vm_pu"].as_f64().unwrap() >= 0.94);
    let lost: f64 = r["lost_welfare"].as_str().unwrap().parse().unwrap();
    let free_surplus: f64 = free["surplus"].as_str().unwrap().parse().unwrap();
    let bound_surplus: f64 = bound["surplus"].as_str().unwrap().parse().unwrap();
    assert!(lost > 0.0 && (free_surplus - bound_surplus - lost).abs() < 1e-6);
    assert_eq!(r["envelopes"].as_array().unwrap().len(), 20);
    assert_eq!(r["envelopes"][0]["import_binding"], "transformer");
    // Every EV got at most its envelope: 15 minutes at import_kw.
    let cap_kwh = r["envelopes"][0]["import_kw"].as_f64().unwrap() / 4.0;
    let served = bound["market"]["utility_trades"].as_array().unwrap();
    assert!(!served.is_empty());
    for t in served {
        assert!(t["energy_kwh"].as_f64().unwrap() <= cap_kwh + 1e-6, "{t}");
    }
    // Locations that are no bus of the feeder, and broken feeders, are named.
    let bad = tempfile::tempdir().unwrap();
    let orders = bad.path().join("orders.json");
    std::fs::write(
        &orders,
        r#"{"orders": [{"id": "x", "side": "bid", "energy_kwh": 1, "price_per_kwh": 1, "location": "nowhere"}]}"#,
    )
    .unwrap();
    let out = gridmesh(&[
        "market",
        "clear",
        "--orders",
        orders.to_str().unwrap(),
        "--feeder",
        dir.join("feeder.toml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nowhere\" is no bus of the feeder"));
    let feeder = bad.path().join("feeder.toml");
    std::fs::write(
        &feeder,
        "lines = []\n[transformer]\nrating_kva = 0\nr_pu = 0\nx_pu = 0.1\n",
    )
    .unwrap();
    let out = gridmesh(&[
        "market",
        "clear",
        "--orders",
        dir.join("orders.json").to_str().unwrap(),
        "--feeder",
        feeder.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("transformer.rating_kva must be positive"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `gridmesh grid island` on the shipped outage scenario: the transitions in order, critical load
/// fully served through a 4-hour evening outage, and a broken scenario refused by name.
#[test]
fn an_outage_scenario_runs_through_the_islanding_controller() {
    let scenario =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/island/outage.toml");
    let r = stdout_json(&gridmesh(&[
        "grid",
        "island",
        "--scenario",
        scenario.to_str().unwrap(),
        "--json",
    ]));
    let kinds: Vec<&str> = r["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "islanded",
            "resynchronising",
            "reconnected",
            "islanded",
            "resynchronising",
            "reconnected"
        ]
    );
    assert_eq!(r["transitions"][3]["at"], "17:35");
    assert_eq!(r["transitions"][3]["cause"], "outage");
    let evening = &r["outages"][1];
    assert_eq!(evening["minutes_islanded"].as_f64(), Some(245.0));
    assert_eq!(evening["critical_load_served_pct"].as_f64(), Some(100.0));
    assert!(evening["energy_not_served_kwh"].as_f64().unwrap() > 0.0);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&scenario)
            .unwrap()
            .replace("step_minutes = 5", "step_minutes = 7"),
    )
    .unwrap();
    let out = gridmesh(&["grid", "island", "--scenario", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("step_minutes must divide an hour"));
}

/// An OpenDSS feeder through `grid powerflow` (unbalanced, per bus and node as OpenDSS's
/// puVmagAngle) and `grid timeseries`, against OpenDSS's own solution; an unsupported property
/// is an error that names the file and the line.
#[test]
fn opendss_feeders_through_the_binary() {
    let master = gridmesh_refdata::require("dss/ieee13/IEEE13Nodeckt.dss");
    let reference: serde_json::Value = serde_json::from_str(&gridmesh_refdata::require_text(
        "dss/ieee13/ieee13.ref.json",
    ))
    .unwrap();
    let r = stdout_json(&gridmesh(&[
        "grid",
        "powerflow",
        "--case",
        master.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(r["converged"], true);
    let buses = r["buses"].as_object().unwrap();
    assert_eq!(buses.len(), 16);
    for (bus, nodes) in reference["buses"].as_object().unwrap() {
        for (node, v) in nodes.as_object().unwrap() {
            if node.starts_with('_') {
                continue;
            }
            let ours = &buses[bus][node];
            let dm = (ours[0].as_f64().unwrap() - v[0].as_f64().unwrap()).abs();
            assert!(dm < 1e-6, "{bus}.{node}: {dm} pu off");
        }
    }
    assert!(r["unbalance_pct"]["675"].as_f64().unwrap() > 1.0);
    assert!(r["violations"].as_array().unwrap().is_empty());
    assert!((r["losses_kw"].as_f64().unwrap() - 112.391).abs() < 0.01);

    let lv = gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss");
    let r = stdout_json(&gridmesh(&[
        "grid",
        "timeseries",
        "--case",
        lv.to_str().unwrap(),
        "--minutes",
        "60",
        "--json",
    ]));
    assert_eq!(r["steps"], 60);
    let series = r["series"].as_array().unwrap();
    assert_eq!(series.len(), 60);
    let lv_reference: serde_json::Value = serde_json::from_str(&gridmesh_refdata::require_text(
        "dss/ieee-eu-lv/ieee-eu-lv.ref.json",
    ))
    .unwrap();
    for (ours, theirs) in series.iter().zip(
        lv_reference["daily"]["min_max_vm_pu_per_step"]
            .as_array()
            .unwrap(),
    ) {
        assert!((ours["vmin_pu"].as_f64().unwrap() - theirs[0].as_f64().unwrap()).abs() < 1e-6);
        assert!((ours["vmax_pu"].as_f64().unwrap() - theirs[1].as_f64().unwrap()).abs() < 1e-6);
    }

    // Hosting capacity: one answer per home's phase, each with what binds.
    let r = stdout_json(&gridmesh(&[
        "grid",
        "hosting-capacity",
        "--case",
        lv.to_str().unwrap(),
        "--load-mult",
        "0.2",
        "--resolution-kw",
        "1",
        "--json",
    ]));
    let answers = r["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 55);
    for a in answers {
        let kw = a["kw"].as_f64().unwrap();
        assert!(kw > 5.0 && kw < 500.0, "{a}");
        assert!(
            ["overvoltage", "unbalance", "line", "transformer"]
                .contains(&a["limit"]["kind"].as_str().unwrap()),
            "{a}"
        );
    }

    // Per-phase envelopes: one per home, each with the node that bounds it.
    let r = stdout_json(&gridmesh(&[
        "grid",
        "envelopes",
        "--case",
        lv.to_str().unwrap(),
        "--json",
    ]));
    let homes = r["homes"].as_array().unwrap();
    assert_eq!(homes.len(), 55);
    for h in homes {
        assert!(h["import_kw"].as_f64().unwrap() > 0.5, "{h}");
        assert!(h["export_kw"].as_f64().unwrap() > 0.5, "{h}");
        assert!(h["phase"].as_u64().unwrap() >= 1);
    }

    // A property the import does not model: named with its file and line, non-zero exit.
    let scratch = tempfile::tempdir().unwrap();
    let bad = scratch.path().join("bad.dss");
    std::fs::write(
        &bad,
        "clear\nnew circuit.x basekv=12.47\nnew load.a bus1=sourcebus.1 phases=1 kv=7.2 kw=10 spectrum=defaultload\nset voltagebases=[12.47]\ncalcv\nsolve\n",
    )
    .unwrap();
    let out = gridmesh(&["grid", "powerflow", "--case", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.dss:3") && err.contains("spectrum"),
        "{err}"
    );
}
