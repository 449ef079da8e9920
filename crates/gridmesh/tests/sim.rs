//! `gridmesh sim` through the real binary: a shipped scenario, a sweep, broken input.

use std::path::PathBuf;
use std::process::Command;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios")
}

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        .arg("sim")
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn a_shipped_scenario_writes_its_report() {
    let out = tempfile::tempdir().unwrap();
    let scenario = examples().join("street-20.toml");
    let o = sim(&[
        scenario.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--set",
        "period.days=1",
        "--json",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(json["community"]["homes"], 20);
    let root = json["ledger"]["state_root"].as_str().unwrap().to_string();
    assert_eq!(root.len(), 64);
    for f in [
        "kpis.json",
        "kpis.csv",
        "homes.csv",
        "timeseries.csv",
        "report.html",
    ] {
        assert!(out.path().join(f).exists(), "{f} written");
    }
    let series = std::fs::read_to_string(out.path().join("timeseries.csv")).unwrap();
    assert_eq!(
        series.lines().count(),
        1 + 96,
        "a header and one row per slot"
    );
    let homes = std::fs::read_to_string(out.path().join("homes.csv")).unwrap();
    assert_eq!(homes.lines().count(), 1 + 20);
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 4 && html.contains("self-sufficiency"));
    let human = String::from_utf8_lossy(&o.stderr);
    assert!(
        human.contains("self-sufficiency") && human.contains(&root),
        "{human}"
    );
    // The same run again: the same state root.
    let again = sim(&[
        scenario.to_str().unwrap(),
        "--out",
        out.path().join("again").to_str().unwrap(),
        "--set",
        "period.days=1",
        "--json",
        "--quiet",
    ]);
    let json2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json2["ledger"]["state_root"].as_str().unwrap(), root);
}

#[test]
fn a_sweep_writes_a_summary_and_one_report_per_value() {
    let out = tempfile::tempdir().unwrap();
    let scenario = examples().join("street-20.toml");
    let o = sim(&[
        scenario.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--set",
        "period.days=1",
        "--sweep",
        "battery.share=0,1",
        "--quiet",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let csv = std::fs::read_to_string(out.path().join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(out.path().join("sweep.html").exists());
    assert!(out.path().join("battery.share=1/report.html").exists());
    // Every home's bill in both runs, and its change against the first.
    let homes = std::fs::read_to_string(out.path().join("sweep_homes.csv")).unwrap();
    assert_eq!(homes.lines().count(), 21, "{homes}");
    assert!(homes
        .lines()
        .next()
        .unwrap()
        .ends_with("bill at 0,bill at 1,change at 1"));
    let page = std::fs::read_to_string(out.path().join("sweep.html")).unwrap();
    assert!(page.contains("Bills home by home against 0"), "{page}");
    // More batteries: more of the community's PV used at home.
    let sc = |i: usize| rows[i]["community"]["self_consumption"].as_f64().unwrap();
    assert!(sc(1) > sc(0), "{} vs {}", sc(1), sc(0));
}

/// The planner's example: a MATPOWER street and a homes file next to the scenario, found
/// relative to it from any working directory.
#[test]
fn the_planned_street_runs_on_its_case_with_its_homes() {
    let out = tempfile::tempdir().unwrap();
    let scenario = examples().join("planned-street.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        .current_dir(out.path())
        .arg("sim")
        .arg(&scenario)
        .args([
            "--out",
            "run",
            "--set",
            "period.days=1",
            "--json",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // homes.csv: row 1 of the file is bus 3, 9.8 kWp, a 10 kWh battery, an EV, no heat pump.
    let csv = std::fs::read_to_string(out.path().join("run/homes.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let cell = |row: usize, col: &str| rows[row][header.iter().position(|c| *c == col).unwrap()];
    assert_eq!(rows.len(), 12);
    assert_eq!(
        ["area", "pv_kwp", "battery_kwh", "ev", "heat_pump"].map(|c| cell(0, c)),
        ["b3/h1", "9.8", "10.0", "true", "false"]
    );
    assert_eq!(cell(11, "area"), "b10/h12", "the side street's last bus");
    assert_eq!(json["community"]["transformer_rating_kw"], 160.0);
    assert_eq!(json["community"]["power_flow_failures"], 0);
}

#[test]
fn broken_scenarios_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases = [
        ("name = \"x\"\n[homes]\ncuont = 3\n", "cuont"),
        ("name = \"x\"\n[pv]\nshare = 2\n", "pv.share"),
        (
            "name = \"x\"\n[data]\nload = \"nope.csv\"\n",
            "nope.csv: cannot read the file data.load names",
        ),
        ("name = \"x\"\n[period]\ndays = \"x\"\n", "invalid type"),
        (
            "name = \"x\"\n[feeder]\nmatpower = \"missing.m\"\n",
            "missing.m",
        ),
        ("name = [\n", "not valid TOML"),
    ];
    for (text, want) in cases {
        let p = dir.path().join("s.toml");
        std::fs::write(&p, text).unwrap();
        let o = sim(&[
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{text:?}: {err}");
        assert!(
            !out.join("kpis.json").exists(),
            "nothing written for a broken scenario"
        );
    }
    let p = dir.path().join("s.toml");
    std::fs::write(&p, "name = \"x\"\n").unwrap();
    let o = sim(&[
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        "homes.count=zero",
    ]);
    assert!(!o.status.success());
    let o = sim(&[
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--sweep",
        "homes.count",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected key="));
}

fn demo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        .arg("demo")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn the_demo_runs_a_community_day_on_a_node_and_prints_its_kpis() {
    let out = tempfile::tempdir().unwrap();
    let o = demo(&[
        "--day-seconds",
        "0",
        "--set",
        "homes.count=20",
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    let human = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{human}");
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert!(json["api"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    let k = &json["outcome"];
    assert_eq!(k["community"]["homes"], 20);
    assert_eq!(k["community"]["days"], 1);
    assert_eq!(k["ledger"]["height"], 1 + 96 + 5);
    assert!(k["ledger"]["transactions"].as_u64().unwrap() > 20 * 96);
    assert!(k["ledger"]["rejected"].as_object().unwrap().is_empty());
    assert!(k["community"]["outage_slots"].as_u64().unwrap() > 0);
    // Progress every three simulated hours, then the KPI summary.
    assert!(human.contains("embedded node at http://127.0.0.1:"));
    assert!(
        human.contains("18:00 UTC") && human.contains("islanded"),
        "{human}"
    );
    assert!(human.contains("self-sufficiency") && human.contains("critical load served"));
    assert!(out.path().join("report.html").exists());
    assert!(out.path().join("kpis.json").exists());
}

#[test]
fn the_demo_refuses_bad_options_with_the_reason() {
    for (args, want) in [
        (&["--day-seconds=-1"][..], "--day-seconds"),
        (&["--set", "homes.count=zero"][..], "homes.count"),
        (
            &["--scenario", "/nonexistent.toml"][..],
            "/nonexistent.toml",
        ),
    ] {
        let o = demo(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(
            !err.contains("embedded node"),
            "refused before starting: {err}"
        );
    }
}
