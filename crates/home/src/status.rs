//! What `gridmesh home status` shows: the devices now, the setpoints, the plan ahead, plan
//! versus measured for the day, the latest orders and the readings' fate. The loop writes it to
//! `status.json` in the data dir every poll (whole, then renamed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gridmesh_client::agent_runner::PlacedOrder;
use gridmesh_types::units::slot_start_ms;
use serde::Serialize;

use crate::devices::DeviceStatus;
use crate::journal::SlotRecord;
use crate::run::{HomeReport, PlanEntry};

pub const STATUS_FILE: &str = "status.json";

/// Reads a home's `status.json`.
pub fn read_status(data_dir: &Path) -> anyhow::Result<serde_json::Value> {
    let path = data_dir.join(STATUS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is `gridmesh home run` running with this data dir?)",
            path.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Now {
    pub load_kw: Option<f64>,
    pub pv_kw: Option<f64>,
    /// Positive discharging.
    pub battery_kw: Option<f64>,
    /// Positive importing.
    pub grid_kw: Option<f64>,
    pub soc_kwh: Option<f64>,
    /// The EV's charging power, whether it is plugged in, and its session's energy (kWh).
    pub ev_kw: Option<f64>,
    pub ev_plugged: Option<bool>,
    pub ev_session_kwh: Option<f64>,
    /// The indoor temperature of a home with a heat pump, °C.
    pub indoor_c: Option<f64>,
    /// The hot-water tank's temperature, °C.
    pub tank_c: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Setpoints {
    /// The battery's setpoint, positive discharging.
    pub battery_kw: Option<f64>,
    pub pv_limit_pct: Option<f64>,
    /// How the EV charger is driven: `profile`, `start-stop`, or `unknown` before it answered.
    pub ev_control: Option<&'static str>,
    /// The OCPP version the EV charger speaks (`1.6`, `2.0.1`), once it connected.
    pub ev_ocpp: Option<&'static str>,
}

/// One slot, planned and (once measured) actual.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlanRow {
    pub slot: u64,
    pub start_ms: u64,
    pub planned_battery_kw: Option<f64>,
    pub planned_grid_kw: Option<f64>,
    pub planned_soc_kwh: Option<f64>,
    pub planned_ev_kw: Option<f64>,
    pub actual_battery_kw: Option<f64>,
    pub actual_grid_kw: Option<f64>,
    pub actual_soc_kwh: Option<f64>,
    pub actual_ev_kw: Option<f64>,
    /// Whether the home followed the plan (else it ran self-consumption).
    pub followed: Option<bool>,
}

impl PlanRow {
    pub fn planned(slot: u64, p: &PlanEntry) -> PlanRow {
        PlanRow {
            slot,
            start_ms: slot_start_ms(slot),
            planned_battery_kw: Some(p.battery_kw),
            planned_grid_kw: Some(p.import_kw - p.export_kw),
            planned_soc_kwh: Some(p.soc_kwh),
            planned_ev_kw: Some(p.ev_kw),
            ..PlanRow::default()
        }
    }
}

/// The last 24 hours: every measured slot with what its plan wanted, if it followed one.
pub fn last_day(slot: u64, history: &BTreeMap<u64, SlotRecord>) -> Vec<PlanRow> {
    history
        .range(slot.saturating_sub(96)..slot)
        .map(|(s, r)| PlanRow {
            slot: *s,
            start_ms: slot_start_ms(*s),
            planned_battery_kw: r.planned_battery_kw,
            planned_grid_kw: r.planned_grid_kw,
            planned_soc_kwh: None,
            planned_ev_kw: r.planned_ev_kw,
            actual_battery_kw: Some(r.battery_kw),
            actual_ev_kw: r.planned_ev_kw.map(|_| r.ev_kw),
            actual_grid_kw: Some((r.import_kwh - r.export_kwh) / 0.25),
            actual_soc_kwh: r.soc_kwh,
            followed: Some(r.planned),
        })
        .collect()
}

/// The learned load model: when it was trained, on how much, and how it did on the last day
/// against persistence.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LearnedStatus {
    pub trained_at_ms: u64,
    pub training_rows: usize,
    pub mae_learned_kw: f64,
    pub mae_persistence_kw: f64,
    pub in_use: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusDoc {
    pub time_ms: u64,
    pub slot: u64,
    /// `plan` (following the agent's plan) or `self-consumption` (the local fallback).
    pub mode: &'static str,
    pub fallback_reason: Option<String>,
    /// `learned` (boosted trees on the home's history), `measured` (persistence of the home's
    /// own history) or `reference` (profiles, at cold start).
    pub forecast: &'static str,
    /// The learned load model, once trained (after a week of the home's own history).
    pub learned: Option<LearnedStatus>,
    pub devices: BTreeMap<String, DeviceStatus>,
    pub now: Now,
    pub setpoints: Setpoints,
    /// The envelope's export limit in this slot, kW.
    pub export_cap_kw: Option<f64>,
    /// The next slots' plan.
    pub plan: Vec<PlanRow>,
    /// Plan versus measured, the last 24 hours.
    pub last_day: Vec<PlanRow>,
    /// The latest orders, newest first.
    pub orders: Vec<PlacedOrder>,
    pub readings_queued: usize,
    pub readings_dropped: u64,
    pub report: HomeReport,
}

pub struct Status {
    path: PathBuf,
    doc: StatusDoc,
}

impl Status {
    pub fn new(data_dir: &Path) -> Status {
        Status {
            path: data_dir.join(STATUS_FILE),
            doc: StatusDoc::default(),
        }
    }

    /// Changes the document and writes it.
    pub fn update(&mut self, f: impl FnOnce(&mut StatusDoc)) {
        f(&mut self.doc);
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&self.doc)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot write the status");
        }
    }
}

/// `status.json` for people: kW with one decimal, times as UTC clock times.
pub fn human(s: &serde_json::Value) -> String {
    use std::fmt::Write;
    let kw = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1} kW"));
    let time = |ms: &serde_json::Value| {
        ms.as_u64().map_or("-".into(), |ms| {
            let t = gridmesh_types::units::rfc3339(ms / 1_000);
            t.get(11..16).unwrap_or(&t).to_string()
        })
    };
    let mut out = String::new();
    let when = s["time_ms"]
        .as_u64()
        .map_or("-".into(), |ms| gridmesh_types::units::rfc3339(ms / 1_000));
    let _ = writeln!(out, "{when}  mode: {}", s["mode"].as_str().unwrap_or("-"));
    if let Some(r) = s["fallback_reason"].as_str() {
        let _ = writeln!(out, "  why: {r}");
    }
    let _ = writeln!(out, "forecast: {}", s["forecast"].as_str().unwrap_or("-"));
    if let Some(l) = s["learned"].as_object() {
        let _ = writeln!(
            out,
            "  load model: trained on {} rows; on the last day {:.2} kW off against persistence's {:.2} kW ({})",
            l["training_rows"],
            l["mae_learned_kw"].as_f64().unwrap_or(0.0),
            l["mae_persistence_kw"].as_f64().unwrap_or(0.0),
            if l["in_use"] == true { "in use" } else { "not in use" }
        );
    }
    let n = &s["now"];
    let _ =
        writeln!(
        out,
        "now: load {}, PV {}, battery {} (+ discharging), grid {} (+ importing), battery energy {}",
        kw(&n["load_kw"]),
        kw(&n["pv_kw"]),
        kw(&n["battery_kw"]),
        kw(&n["grid_kw"]),
        n["soc_kwh"].as_f64().map_or("-".into(), |x| format!("{x:.1} kWh"))
    );
    let celsius = |v: &serde_json::Value| v.as_f64().map(|c| format!("{c:.1} °C"));
    match (celsius(&n["indoor_c"]), celsius(&n["tank_c"])) {
        (None, None) => {}
        (indoor, tank) => {
            let parts: Vec<String> = [("indoor", indoor), ("hot water", tank)]
                .into_iter()
                .filter_map(|(what, c)| Some(format!("{what} {}", c?)))
                .collect();
            let _ = writeln!(out, "heating: {}", parts.join(", "));
        }
    }
    if n["ev_plugged"] == true {
        let _ = writeln!(
            out,
            "EV: plugged in, charging {}, {} this session (driven by {}, OCPP {})",
            kw(&n["ev_kw"]),
            n["ev_session_kwh"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x:.1} kWh")),
            s["setpoints"]["ev_control"].as_str().unwrap_or("-"),
            s["setpoints"]["ev_ocpp"].as_str().unwrap_or("-")
        );
    } else if n["ev_plugged"] == false {
        let _ = writeln!(out, "EV: not plugged in");
    }
    if let Some(devices) = s["devices"].as_object() {
        for (name, d) in devices {
            let state = match d["error"].as_str() {
                Some(e) => format!("FAILING: {e}"),
                None if d["connected"] == true => "ok".into(),
                None => "not connected".into(),
            };
            let _ = writeln!(out, "  {name}: {state}");
        }
    }
    let _ = writeln!(
        out,
        "setpoints: battery {}, PV limit {}",
        kw(&s["setpoints"]["battery_kw"]),
        s["setpoints"]["pv_limit_pct"]
            .as_f64()
            .map_or("none".into(), |p| format!("{p:.0} %"))
    );
    let rows = |title: &str, list: &serde_json::Value, out: &mut String| {
        let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
            return;
        };
        let _ = writeln!(
            out,
            "{title}\n  time   battery plan/actual   grid plan/actual      EV plan/actual"
        );
        for r in list.iter().skip(list.len().saturating_sub(12)) {
            let _ = writeln!(
                out,
                "  {}  {:>8} / {:<8}  {:>8} / {:<8}  {:>8} / {:<8}",
                time(&r["start_ms"]),
                kw(&r["planned_battery_kw"]),
                kw(&r["actual_battery_kw"]),
                kw(&r["planned_grid_kw"]),
                kw(&r["actual_grid_kw"]),
                kw(&r["planned_ev_kw"]),
                kw(&r["actual_ev_kw"])
            );
        }
    };
    rows("plan ahead:", &s["plan"], &mut out);
    rows("the last slots measured:", &s["last_day"], &mut out);
    let r = &s["report"];
    let _ = writeln!(
        out,
        "readings: {} committed, {} queued, {} refused{}",
        r["readings_committed"],
        s["readings_queued"],
        r["readings_refused"],
        r["last_reading_error"]
            .as_str()
            .map_or(String::new(), |e| format!(" (last: {e})"))
    );
    let _ = writeln!(
        out,
        "orders placed: {}{}",
        r["orders_placed"],
        if r["sells"] == true {
            ""
        } else {
            " (buys only: no keyed PV or battery registered)"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn people_read_the_house_and_the_tank_in_degrees() {
        let s = serde_json::json!({"now": {"indoor_c": 21.26, "tank_c": 47.04}});
        assert!(human(&s).contains("heating: indoor 21.3 °C, hot water 47.0 °C"));
        let s = serde_json::json!({"now": {"tank_c": 52.0}});
        assert!(human(&s).contains("heating: hot water 52.0 °C\n"));
        assert!(!human(&serde_json::json!({"now": {}})).contains("heating"));
    }
}
