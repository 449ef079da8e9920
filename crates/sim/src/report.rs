//! A run's files: `kpis.json` (everything), `kpis.csv` (the community's indicators, one per
//! row), `homes.csv` (per home), `timeseries.csv` (per slot) and `report.html`, a page with the
//! indicators and plots (SVG rendered by plotters into the file, so it opens offline).

use std::fmt::Write as _;
use std::path::Path;

pub use gridmesh_charts::{line_chart, Line, PALETTE};
use serde::Serialize;

use crate::kpi::Outcome;

/// Why the files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] gridmesh_charts::ChartError),
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), ReportError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| ReportError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A JSON object's fields as (key, value text) rows, nested keys joined by dots.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Null => out.push((prefix.to_string(), String::new())),
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Rows of records with the same fields as CSV (header from the first).
pub fn to_csv<T: Serialize>(rows: &[T]) -> String {
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let mut fields = Vec::new();
        flatten(
            "",
            &serde_json::to_value(r).expect("serialisable"),
            &mut fields,
        );
        if i == 0 {
            out += &fields
                .iter()
                .map(|(k, _)| csv_field(k))
                .collect::<Vec<_>>()
                .join(",");
            out.push('\n');
        }
        out += &fields
            .iter()
            .map(|(_, v)| csv_field(v))
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
    }
    out
}

/// Writes every file of a run into `dir` (created if missing).
pub fn write_run(o: &Outcome, dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    write(
        dir,
        "kpis.json",
        &(serde_json::to_string_pretty(o).expect("serialisable") + "\n"),
    )?;
    let mut rows = Vec::new();
    flatten(
        "",
        &serde_json::to_value(&o.community).expect("serialisable"),
        &mut rows,
    );
    flatten(
        "ledger",
        &serde_json::to_value(&o.ledger).expect("serialisable"),
        &mut rows,
    );
    if o.devices.keyed_inverters > 0 {
        flatten(
            "devices",
            &serde_json::to_value(&o.devices).expect("serialisable"),
            &mut rows,
        );
    }
    let mut kpis = String::from("kpi,value\n");
    for (k, v) in rows {
        let _ = writeln!(kpis, "{},{}", csv_field(&k), csv_field(&v));
    }
    write(dir, "kpis.csv", &kpis)?;
    write(dir, "homes.csv", &to_csv(&o.homes))?;
    write(dir, "timeseries.csv", &to_csv(&o.series))?;
    write(dir, "report.html", &html(o)?)?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("–".into(), f)
}

fn html(o: &Outcome) -> Result<String, ReportError> {
    let c = &o.community;
    let hours = |k: usize| k as f64 / 4.0;
    let series = |f: &dyn Fn(&crate::kpi::SlotRow) -> f64| -> Vec<(f64, f64)> {
        o.series
            .iter()
            .enumerate()
            .map(|(k, r)| (hours(k), f(r)))
            .collect()
    };
    let power = line_chart(
        "Community power",
        "hours from the start",
        "power (kW)",
        &[
            Line {
                name: "load (incl. EV)",
                color: PALETTE[0],
                points: series(&|r| r.load_kw + r.ev_kw),
            },
            Line {
                name: "PV",
                color: PALETTE[1],
                points: series(&|r| r.pv_kw),
            },
            Line {
                name: "grid exchange (import +)",
                color: PALETTE[3],
                points: series(&|r| r.pcc_kw),
            },
            Line {
                name: "batteries (charging +)",
                color: PALETTE[2],
                points: series(&|r| r.battery_kw),
            },
        ],
    )?;
    let grid = line_chart(
        "Transformer loading",
        "hours from the start",
        "loading (% of rating)",
        &[Line {
            name: "most loaded transformer",
            color: PALETTE[4],
            points: series(&|r| r.transformer_loading_percent),
        }],
    )?;
    let volts: Vec<Line> = if o.series.iter().any(|r| r.min_vm_pu.is_some()) {
        vec![
            Line {
                name: "lowest bus voltage",
                color: PALETTE[0],
                points: series(&|r| r.min_vm_pu.unwrap_or(1.0)),
            },
            Line {
                name: "highest bus voltage",
                color: PALETTE[3],
                points: series(&|r| r.max_vm_pu.unwrap_or(1.0)),
            },
        ]
    } else {
        Vec::new()
    };
    let voltage = if volts.is_empty() {
        String::from("<p>Power flow was not solved in this run.</p>")
    } else {
        line_chart(
            "Voltage band",
            "hours from the start",
            "voltage (pu)",
            &volts,
        )?
    };
    let price = line_chart(
        "Peer-to-peer market",
        "hours from the start",
        "clearing price (tokens/kWh)",
        &[Line {
            name: "clearing price",
            color: PALETTE[2],
            // A slot without trades breaks the line: no price is drawn across it.
            points: o
                .series
                .iter()
                .enumerate()
                .map(|(k, r)| (hours(k), r.clearing_price.unwrap_or(f64::NAN)))
                .collect(),
        }],
    )?;
    let mut savings: Vec<f64> = o.homes.iter().map(|h| h.savings).collect();
    savings.sort_by(f64::total_cmp);
    let savings_chart = line_chart(
        "Savings against the utility-only bill, homes in order",
        "home (sorted by savings)",
        "savings (tokens)",
        &[Line {
            name: "savings",
            color: PALETTE[0],
            points: savings
                .iter()
                .enumerate()
                .map(|(i, s)| (i as f64 + 1.0, *s))
                .collect(),
        }],
    )?;
    let pct = |v: f64| format!("{:.1} %", v * 100.0);
    let rows: Vec<(&str, String)> = vec![
        ("homes", c.homes.to_string()),
        ("days", c.days.to_string()),
        ("self-sufficiency", pct(c.self_sufficiency)),
        ("self-consumption", opt(c.self_consumption, pct)),
        ("mean bill (tokens)", format!("{:.2}", c.mean_bill)),
        (
            "mean utility-only bill (tokens)",
            format!("{:.2}", c.mean_baseline_bill),
        ),
        (
            "mean savings (tokens)",
            format!("{:.2} ({})", c.mean_savings, opt(c.savings_share, pct)),
        ),
        ("Gini of savings", opt(c.gini_of_savings, gini_text)),
        (
            "peak import / export (kW)",
            format!("{:.1} / {:.1}", c.peak_import_kw, c.peak_export_kw),
        ),
        (
            "peak transformer loading",
            format!(
                "{:.1} % ({} slots over rating)",
                c.peak_transformer_loading_percent, c.slots_over_transformer_rating
            ),
        ),
        ("losses (kWh)", format!("{:.1}", c.losses_kwh)),
        (
            "voltage band (pu)",
            format!(
                "{} – {}",
                opt(c.min_voltage_pu, |v| format!("{v:.4}")),
                opt(c.max_voltage_pu, |v| format!("{v:.4}"))
            ),
        ),
        (
            "voltage / thermal violations (slots × elements)",
            format!("{} / {}", c.voltage_violations, c.thermal_violations),
        ),
        (
            "largest voltage unbalance; slots × buses over 2 %",
            opt(c.max_unbalance_pct, |v| {
                format!("{v:.2} %; {}", c.unbalance_violations)
            }),
        ),
        ("outage slots", c.outage_slots.to_string()),
        (
            "energy not served (kWh)",
            format!(
                "{:.1} (utility only: {:.1})",
                c.energy_not_served_kwh, c.baseline_energy_not_served_kwh
            ),
        ),
        ("critical load served", opt(c.critical_load_served, pct)),
        ("P2P traded (kWh)", format!("{:.1}", c.p2p_kwh)),
        (
            "mean P2P price (tokens/kWh)",
            opt(c.mean_p2p_price, |p| format!("{p:.4}")),
        ),
        (
            "market welfare efficiency",
            opt(c.market_welfare_efficiency, pct),
        ),
        (
            "keyed inverters (spoofing)",
            format!(
                "{} ({})",
                o.devices.keyed_inverters, o.devices.spoofing_inverters
            ),
        ),
        (
            "false readings held / false readings",
            format!(
                "{} / {}",
                o.devices.false_readings_held, o.devices.false_readings
            ),
        ),
        (
            "true readings held (false alarms)",
            o.devices.true_readings_held.to_string(),
        ),
        (
            "inverters slashed: spoofers / honest",
            format!(
                "{} / {}",
                o.devices.spoofers_slashed, o.devices.honest_slashed
            ),
        ),
        (
            "operating envelopes: slots sent / failed, trims",
            format!(
                "{} / {}, {}",
                c.envelope_slots, c.envelope_failures, c.envelope_trims
            ),
        ),
        (
            "tokens earned / paid (rewards minted)",
            format!(
                "{:.2} / {:.2} ({:.2})",
                c.tokens_earned, c.tokens_paid, c.rewards_minted
            ),
        ),
        (
            "EV energy not delivered (kWh)",
            format!("{:.1}", c.ev_unmet_kwh),
        ),
        (
            "ledger",
            format!(
                "height {}, {} transactions, {} state entries, state root {}",
                o.ledger.height, o.ledger.transactions, o.ledger.state_entries, o.ledger.state_root
            ),
        ),
        (
            "run",
            format!(
                "{:.1} s ({:.2} s per simulated day)",
                o.run_seconds, o.seconds_per_simulated_day
            ),
        ),
    ];
    let mut table = String::new();
    for (k, v) in rows {
        let _ = writeln!(
            table,
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
            esc(k),
            esc(&v)
        );
    }
    Ok(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>gridmesh simulation: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 960px; padding: 0 1rem; color: #1a1a1a; background: #fff; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} th, td {{ text-align: left; padding: .25rem .75rem; border-bottom: 1px solid #ddd; }}
th {{ font-weight: 600; }} figure {{ margin: 1.5rem 0; }} svg {{ max-width: 100%; height: auto; }}
</style></head>
<body>
<h1>Simulation: {name}</h1>
<p>Seed {seed}. Files next to this page: <code>kpis.json</code>, <code>kpis.csv</code>, <code>homes.csv</code>, <code>timeseries.csv</code>.</p>
<h2>Indicators</h2>
<table>{table}</table>
<h2>Plots</h2>
<figure>{power}</figure>
<figure>{grid}</figure>
<figure>{voltage}</figure>
<figure>{price}</figure>
<figure>{savings_chart}</figure>
</body></html>
"#,
        name = esc(&o.scenario),
        seed = o.seed,
    ))
}

/// The Gini of savings as a reader should take it: above 1 only when some homes lost money.
fn gini_text(g: f64) -> String {
    if g > 1.0 {
        format!("{g:.3} (above 1: some homes paid more than with the utility alone)")
    } else {
        format!("{g:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gini_above_one_says_why() {
        assert_eq!(gini_text(0.25), "0.250");
        let g = crate::kpi::gini(&[-1.0, 0.2, 2.0]).unwrap();
        assert!(g > 1.0, "{g}");
        assert!(gini_text(g).contains("paid more than with the utility alone"));
    }

    #[test]
    fn charts_render_without_fonts() {
        let svg = line_chart(
            "t",
            "x (h)",
            "y (kW)",
            &[Line {
                name: "a",
                color: PALETTE[0],
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
        )
        .unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("y (kW)"),
            "{}",
            &svg[..200.min(svg.len())]
        );
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        #[derive(Serialize)]
        struct R {
            a: String,
            b: Option<f64>,
        }
        let text = to_csv(&[
            R {
                a: "x,y".into(),
                b: None,
            },
            R {
                a: "z".into(),
                b: Some(1.5),
            },
        ]);
        assert_eq!(text, "a,b\n\"x,y\",\nz,1.5\n");
    }
}

/// One row of a sweep's summary.
#[derive(Serialize)]
struct SweepRow<'a> {
    value: &'a str,
    #[serde(flatten)]
    kpis: &'a crate::kpi::CommunityKpis,
    state_root: &'a str,
}

/// The sweep's summary: `sweep.csv` (one row of community KPIs per value) and `sweep.html`
/// (the main indicators against the swept value).
pub fn write_sweep(key: &str, runs: &[crate::SweepRun], out: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(out).map_err(|source| ReportError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let rows: Vec<SweepRow> = runs
        .iter()
        .map(|r| SweepRow {
            value: &r.value,
            kpis: &r.outcome.community,
            state_root: &r.outcome.ledger.state_root,
        })
        .collect();
    write(out, "sweep.csv", &to_csv(&rows))?;
    let numeric: Vec<Option<f64>> = runs.iter().map(|r| r.value.parse::<f64>().ok()).collect();
    let x = |i: usize| numeric[i].unwrap_or(i as f64);
    let label = if numeric.iter().all(Option::is_some) {
        key.to_string()
    } else {
        format!("{key} (run number)")
    };
    let line = |name: &'static str, color, f: &dyn Fn(&crate::kpi::CommunityKpis) -> f64| Line {
        name,
        color,
        points: runs
            .iter()
            .enumerate()
            .map(|(i, r)| (x(i), f(&r.outcome.community)))
            .collect(),
    };
    let shares = line_chart(
        &format!("Community indicators against {key}"),
        &label,
        "share (%)",
        &[
            line("self-sufficiency", PALETTE[0], &|c| {
                c.self_sufficiency * 100.0
            }),
            line("self-consumption", PALETTE[1], &|c| {
                c.self_consumption.unwrap_or(0.0) * 100.0
            }),
            line("savings / utility-only bill", PALETTE[2], &|c| {
                c.savings_share.unwrap_or(0.0) * 100.0
            }),
            line("peak transformer loading", PALETTE[3], &|c| {
                c.peak_transformer_loading_percent
            }),
        ],
    )?;
    let money = line_chart(
        &format!("Bills against {key}"),
        &label,
        "tokens per home",
        &[
            line("mean bill", PALETTE[0], &|c| c.mean_bill),
            line("mean utility-only bill", PALETTE[1], &|c| {
                c.mean_baseline_bill
            }),
            line("mean savings", PALETTE[2], &|c| c.mean_savings),
        ],
    )?;
    let mut table = String::from(
        "<tr><th>value</th><th>self-sufficiency</th><th>self-consumption</th><th>mean bill</th><th>mean savings</th><th>peak import (kW)</th><th>losses (kWh)</th><th>voltage violations</th></tr>",
    );
    for r in runs {
        let c = &r.outcome.community;
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{:.1} %</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            esc(&r.value),
            c.self_sufficiency * 100.0,
            opt(c.self_consumption, |v| format!("{:.1} %", v * 100.0)),
            c.mean_bill,
            c.mean_savings,
            c.peak_import_kw,
            c.losses_kwh,
            c.voltage_violations
        );
    }
    let homes = home_bills(runs);
    write(out, "sweep_homes.csv", &homes.csv)?;
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>gridmesh sweep: {k}</title>\n<style>body {{ font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 960px; padding: 0 1rem; }} table {{ border-collapse: collapse; }} th, td {{ padding: .25rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }} svg {{ max-width: 100%; height: auto; }}</style></head>\n<body><h1>Sweep over {k}</h1><p>Each run's own report is in its directory <code>{k}=VALUE/</code>.</p><table>{table}</table>{changes}<figure>{shares}</figure><figure>{money}</figure></body></html>\n",
        k = esc(key),
        changes = homes.html,
    );
    write(out, "sweep.html", &page)
}

/// Every home's bill in every run of a sweep, and how it changed against the first run: who
/// pays for what the swept setting changed (say, the peak coordination removes).
struct HomeBills {
    csv: String,
    html: String,
}

fn home_bills(runs: &[crate::SweepRun]) -> HomeBills {
    let Some(first) = runs.first() else {
        return HomeBills {
            csv: String::new(),
            html: String::new(),
        };
    };
    let mut csv = String::from("home,area,strategy");
    for r in runs {
        let _ = write!(csv, ",{}", csv_field(&format!("bill at {}", r.value)));
    }
    for r in &runs[1..] {
        let _ = write!(csv, ",{}", csv_field(&format!("change at {}", r.value)));
    }
    csv.push('\n');
    for (k, h) in first.outcome.homes.iter().enumerate() {
        let _ = write!(
            csv,
            "{},{},{}",
            h.home,
            csv_field(&h.area),
            h.strategy.name()
        );
        for r in runs {
            let _ = write!(csv, ",{:.6}", r.outcome.homes[k].bill);
        }
        for r in &runs[1..] {
            let _ = write!(csv, ",{:.6}", r.outcome.homes[k].bill - h.bill);
        }
        csv.push('\n');
    }
    let mut html = String::new();
    if runs.len() > 1 {
        let _ = write!(
            html,
            "<h2>Bills home by home against {}</h2><table><tr><th>value</th><th>mean change</th><th>homes paying more</th><th>largest increase</th><th>largest decrease</th><th>peak import</th></tr>",
            esc(&first.value)
        );
        for r in runs {
            let changes: Vec<(usize, f64)> = r
                .outcome
                .homes
                .iter()
                .zip(&first.outcome.homes)
                .map(|(a, b)| (a.home, a.bill - b.bill))
                .collect();
            let n = changes.len().max(1) as f64;
            let mean = changes.iter().map(|c| c.1).sum::<f64>() / n;
            let more = changes.iter().filter(|c| c.1 > 0.005).count();
            let up = changes.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
            let down = changes.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
            let at = |c: Option<(usize, f64)>| {
                c.map_or("–".into(), |(h, v)| format!("{v:+.2} tokens (home {h})"))
            };
            let c = &r.outcome.community;
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{mean:+.2} tokens</td><td>{more} of {}</td><td>{}</td><td>{}</td><td>{:.1} kW{}</td></tr>",
                esc(&r.value),
                changes.len(),
                at(up),
                at(down),
                c.peak_import_kw,
                c.peak_import_at_utc
                    .as_deref()
                    .map_or(String::new(), |t| format!(" at {}", esc(t))),
            );
        }
        html.push_str(
            "</table><p>Every home's bill in every run: <code>sweep_homes.csv</code>.</p>",
        );
    }
    HomeBills { csv, html }
}

/// The KPIs a person reads first, as text lines.
pub fn summary(o: &Outcome) -> String {
    let c = &o.community;
    let pct = |v: f64| format!("{:.1} %", v * 100.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} homes, {} day{}, seed {}",
        o.scenario,
        c.homes,
        c.days,
        if c.days == 1 { "" } else { "s" },
        o.seed
    );
    let _ = writeln!(
        s,
        "  self-sufficiency      {}   self-consumption {}",
        pct(c.self_sufficiency),
        opt(c.self_consumption, pct)
    );
    let _ = writeln!(
        s,
        "  mean bill             {:.2} tokens (utility only {:.2}; savings {:.2}, {})",
        c.mean_bill,
        c.mean_baseline_bill,
        c.mean_savings,
        opt(c.savings_share, pct)
    );
    let _ = writeln!(
        s,
        "  Gini of savings       {}",
        opt(c.gini_of_savings, gini_text)
    );
    let _ = writeln!(
        s,
        "  peak import/export    {:.1} kW{} / {:.1} kW; transformer peak {:.0} % ({} slots over)",
        c.peak_import_kw,
        c.peak_import_at_utc
            .as_deref()
            .map_or(String::new(), |t| format!(" at {t}")),
        c.peak_export_kw,
        c.peak_transformer_loading_percent,
        c.slots_over_transformer_rating
    );
    let _ = writeln!(
        s,
        "  losses                {:.1} kWh; voltage {}-{} pu, {} voltage / {} thermal violations",
        c.losses_kwh,
        opt(c.min_voltage_pu, |v| format!("{v:.3}")),
        opt(c.max_voltage_pu, |v| format!("{v:.3}")),
        c.voltage_violations,
        c.thermal_violations
    );
    if let Some(u) = c.max_unbalance_pct {
        let _ = writeln!(
            s,
            "  unbalance             up to {u:.2} %; {} bus-slots over 2 %",
            c.unbalance_violations
        );
    }
    if let Some(t) = c.min_indoor_c {
        let _ = writeln!(
            s,
            "  heat pumps            {:.0} kWh; coldest home {t:.1} °C, {} home-slots below the comfort band",
            c.heat_pump_kwh, c.slots_below_comfort
        );
    }
    if c.envelope_slots + c.envelope_failures > 0 {
        let _ = writeln!(
            s,
            "  envelopes             {} slots sent, {} not ({} orders trimmed)",
            c.envelope_slots, c.envelope_failures, c.envelope_trims
        );
    }
    let _ = writeln!(
        s,
        "  P2P                   {:.1} kWh at {} tokens/kWh; welfare efficiency {}",
        c.p2p_kwh,
        opt(c.mean_p2p_price, |p| format!("{p:.3}")),
        opt(c.market_welfare_efficiency, pct)
    );
    if c.outage_slots > 0 {
        let _ = writeln!(s, "  outages               {} slots; not served {:.1} kWh (utility only {:.1}); critical load served {}", c.outage_slots, c.energy_not_served_kwh, c.baseline_energy_not_served_kwh, opt(c.critical_load_served, pct));
    }
    let d = &o.devices;
    if d.keyed_inverters > 0 {
        let _ = writeln!(
            s,
            "  keyed inverters       {} ({} spoofing): {} readings, {} false of which {} held; {} true held; {} fraud reports; slashed {} spoofers, {} honest ({:.1} tokens); {:.1} tokens of rewards minted",
            d.keyed_inverters,
            d.spoofing_inverters,
            d.readings,
            d.false_readings,
            d.false_readings_held,
            d.true_readings_held,
            d.fraud_reports,
            d.spoofers_slashed,
            d.honest_slashed,
            d.bonds_slashed_tokens,
            o.community.rewards_minted
        );
    }
    let _ = writeln!(
        s,
        "  ledger                height {}, {} transactions, {} state entries (largest bucket {}), state root {}",
        o.ledger.height, o.ledger.transactions, o.ledger.state_entries, o.ledger.largest_bucket, o.ledger.state_root
    );
    for (why, n) in &o.ledger.rejected {
        let _ = writeln!(s, "  refused ×{n}: {why}");
    }
    let _ = writeln!(
        s,
        "  run                   {:.1} s ({:.2} s per simulated day)",
        o.run_seconds, o.seconds_per_simulated_day
    );
    s
}
