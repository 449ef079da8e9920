//! The feeder, live: what the community's power flow looks like slot by slot, for the dashboard's
//! Network page. A node learns it from whoever solves the feeder's power flow next to it (today
//! the simulator driving the demo's node; `SimChain::feeder`); a node without one says so.
//!
//! `GET /v1/grid/feeder`: the latest slot (exchange at the transformer, load, PV, batteries, EVs,
//! losses, voltages, transformer loading) and the last day's community figures (self-sufficiency,
//! peak import and export, losses, slots outside the voltage band or over a rating, islanded
//! slots). `GET /v1/charts/feeder.svg`: a single-line diagram, branches coloured by loading and
//! buses by voltage, drawn on the feeder's own map where it has bus coordinates. A feeder solved
//! phase by phase (an OpenDSS feeder) also gives each phase's lowest and highest voltage and the
//! largest unbalance, and `GET /v1/charts/feeder-profile.svg`: every bus's phase voltages against
//! its distance from the source, as OpenDSS plots a feeder's profile. Keeps [`RECENT_SLOTS`] slots.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use gridmesh_charts::plotters::prelude::*;
use gridmesh_grid::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{ApiError, ApiResult};
use crate::Shared;

pub use gridmesh_api::home::HomeLiveView;

/// Slots of history kept (a day).
pub const RECENT_SLOTS: usize = 96;

/// The latest snapshot and the recent slots.
#[derive(Default)]
pub struct FeederLive {
    latest: Option<Snapshot>,
    recent: VecDeque<Snapshot>,
}

impl FeederLive {
    pub fn push(live: &Mutex<FeederLive>, s: Snapshot) {
        let mut l = live.lock().expect("feeder lock");
        if l.recent.len() == RECENT_SLOTS {
            l.recent.pop_front();
        }
        // The recent slots keep their figures, not their buses (O(slots), not O(slots × buses)).
        l.recent.push_back(Snapshot {
            buses: Vec::new(),
            branches: Vec::new(),
            homes: Vec::new(),
            row: s.row.clone(),
            ..s
        });
        l.latest = Some(s);
    }

    /// What `home`'s devices did in the latest slot, if this node knows.
    pub fn home(live: &Mutex<FeederLive>, home: &gridmesh_types::Address) -> Option<HomeLiveView> {
        let l = live.lock().expect("feeder lock");
        let s = l.latest.as_ref()?;
        let h = s.homes.iter().find(|h| h.address == *home)?;
        Some(HomeLiveView {
            slot_start_ms: s.slot_start_ms,
            load_kw: h.load_kw,
            pv_kw: h.pv_kw,
            battery_kw: h.battery_kw,
            battery_soc_percent: h
                .battery_soc_kwh
                .zip(h.battery_capacity_kwh)
                .filter(|(_, c)| *c > 0.0)
                .map(|(soc, c)| soc / c * 100.0),
            ev_kw: h.ev_kw,
            net_kw: h.net_kw,
        })
    }
}

/// The latest slot's figures.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct FeederSlotView {
    pub slot_start_ms: u64,
    /// Exchange with the grid at the transformers, kW (positive: import).
    pub pcc_kw: f64,
    pub load_kw: f64,
    pub pv_kw: f64,
    /// Positive: charging (drawn from the feeder like a load), negative: discharging.
    pub battery_kw: f64,
    pub ev_kw: f64,
    pub losses_kw: f64,
    pub min_vm_pu: Option<f64>,
    pub max_vm_pu: Option<f64>,
    /// Solved phase by phase: the largest voltage unbalance of a three-phase bus, %.
    pub max_unbalance_pct: Option<f64>,
    pub transformer_loading_percent: f64,
    pub islanded: bool,
    pub not_served_kw: f64,
}

/// One phase's voltages over the feeder's buses (the source's left out).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct PhaseRangeView {
    pub min_vm_pu: f64,
    pub min_bus: String,
    pub max_vm_pu: f64,
    pub max_bus: String,
}

/// A feeder solved phase by phase, at the latest slot: each phase's voltage range (phases a, b,
/// c are OpenDSS's nodes 1, 2, 3; `None`: no bus has it) and the largest unbalance.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct FeederPhasesView {
    pub a: Option<PhaseRangeView>,
    pub b: Option<PhaseRangeView>,
    pub c: Option<PhaseRangeView>,
    /// Negative- over positive-sequence voltage, %, at the worst three-phase bus.
    pub max_unbalance_pct: Option<f64>,
    pub max_unbalance_bus: Option<String>,
}

/// The community over the recent slots.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct FeederDayView {
    pub slots: usize,
    pub import_kwh: f64,
    pub export_kwh: f64,
    pub load_kwh: f64,
    pub pv_kwh: f64,
    /// 1 − energy imported / energy used.
    pub self_sufficiency: Option<f64>,
    pub peak_import_kw: f64,
    pub peak_export_kw: f64,
    pub losses_kwh: f64,
    pub max_transformer_loading_percent: f64,
    /// Slots with a bus outside the voltage band, and with the transformer over its rating.
    pub voltage_band_slots: usize,
    pub overloaded_slots: usize,
    pub islanded_slots: usize,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct FeederView {
    /// False when nothing solves this node's feeder (then the rest is empty).
    pub available: bool,
    pub vmin_pu: Option<f64>,
    pub vmax_pu: Option<f64>,
    pub buses: usize,
    pub branches: usize,
    pub latest: Option<FeederSlotView>,
    pub day: Option<FeederDayView>,
    /// Solved phase by phase: each phase's voltages (`None`: a balanced feeder).
    pub phases: Option<FeederPhasesView>,
}

fn phases_view(s: &Snapshot) -> Option<FeederPhasesView> {
    if s.buses.iter().all(|b| b.phases.is_empty()) {
        return None;
    }
    let range = |phase: u8| {
        let mut out: Option<PhaseRangeView> = None;
        for b in s.buses.iter().filter(|b| !b.slack) {
            for &(_, vm) in b.phases.iter().filter(|(p, _)| *p == phase) {
                let r = out.get_or_insert_with(|| PhaseRangeView {
                    min_vm_pu: vm,
                    min_bus: b.name.clone(),
                    max_vm_pu: vm,
                    max_bus: b.name.clone(),
                });
                if vm < r.min_vm_pu {
                    (r.min_vm_pu, r.min_bus) = (vm, b.name.clone());
                }
                if vm > r.max_vm_pu {
                    (r.max_vm_pu, r.max_bus) = (vm, b.name.clone());
                }
            }
        }
        out
    };
    let worst = s
        .buses
        .iter()
        .filter(|b| !b.slack)
        .filter_map(|b| Some((b.unbalance_pct?, &b.name)))
        .max_by(|x, y| x.0.total_cmp(&y.0));
    Some(FeederPhasesView {
        a: range(1),
        b: range(2),
        c: range(3),
        max_unbalance_pct: worst.map(|w| w.0),
        max_unbalance_bus: worst.map(|w| w.1.clone()),
    })
}

fn slot_view(s: &Snapshot) -> FeederSlotView {
    let r = &s.row;
    FeederSlotView {
        slot_start_ms: s.slot_start_ms,
        pcc_kw: r.pcc_kw,
        load_kw: r.load_kw,
        pv_kw: r.pv_kw,
        battery_kw: r.battery_kw,
        ev_kw: r.ev_kw,
        losses_kw: r.losses_kw,
        min_vm_pu: r.min_vm_pu,
        max_vm_pu: r.max_vm_pu,
        max_unbalance_pct: r.max_unbalance_pct,
        transformer_loading_percent: r.transformer_loading_percent,
        islanded: r.islanded,
        not_served_kw: r.not_served_kw,
    }
}

fn day_view(recent: &VecDeque<Snapshot>) -> FeederDayView {
    let h = 0.25;
    let rows = || recent.iter().map(|s| (&s.row, s.vmin_pu, s.vmax_pu));
    let import: f64 = rows().map(|(r, ..)| r.pcc_kw.max(0.0) * h).sum();
    let load: f64 = rows().map(|(r, ..)| r.load_kw * h).sum();
    FeederDayView {
        slots: recent.len(),
        import_kwh: import,
        export_kwh: rows().map(|(r, ..)| (-r.pcc_kw).max(0.0) * h).sum(),
        load_kwh: load,
        pv_kwh: rows().map(|(r, ..)| r.pv_kw * h).sum(),
        self_sufficiency: (load > 1e-9).then(|| 1.0 - import / load),
        peak_import_kw: rows().map(|(r, ..)| r.pcc_kw).fold(0.0, f64::max),
        peak_export_kw: rows().map(|(r, ..)| -r.pcc_kw).fold(0.0, f64::max),
        losses_kwh: rows().map(|(r, ..)| r.losses_kw * h).sum(),
        max_transformer_loading_percent: rows()
            .map(|(r, ..)| r.transformer_loading_percent)
            .fold(0.0, f64::max),
        voltage_band_slots: rows()
            .filter(|(r, lo, hi)| {
                r.min_vm_pu.is_some_and(|v| v < *lo) || r.max_vm_pu.is_some_and(|v| v > *hi)
            })
            .count(),
        overloaded_slots: rows()
            .filter(|(r, ..)| r.transformer_loading_percent > 100.0)
            .count(),
        islanded_slots: rows().filter(|(r, ..)| r.islanded).count(),
    }
}

/// The feeder's latest slot and the community's last day.
#[utoipa::path(get, path = "/v1/grid/feeder", responses((status = 200, body = FeederView)))]
pub async fn get_feeder(State(s): State<Arc<Shared>>) -> ApiResult<FeederView> {
    let l = s.feeder.lock().expect("feeder lock");
    Ok(Json(match &l.latest {
        None => FeederView {
            available: false,
            vmin_pu: None,
            vmax_pu: None,
            buses: 0,
            branches: 0,
            latest: None,
            day: None,
            phases: None,
        },
        Some(latest) => FeederView {
            available: true,
            vmin_pu: Some(latest.vmin_pu),
            vmax_pu: Some(latest.vmax_pu),
            buses: latest.buses.len(),
            branches: latest.branches.len(),
            latest: Some(slot_view(latest)),
            day: Some(day_view(&l.recent)),
            phases: phases_view(latest),
        },
    }))
}

/// Loading colour (Okabe-Ito): blue under 50 %, orange to 100 %, vermillion above.
fn loading_colour(p: Option<f64>) -> RGBColor {
    match p {
        Some(p) if p > 100.0 => RGBColor(213, 94, 0),
        Some(p) if p > 50.0 => RGBColor(230, 159, 0),
        Some(_) => RGBColor(0, 114, 178),
        None => RGBColor(150, 150, 150),
    }
}

/// The buses' neighbours: `(bus, branch)` pairs per bus.
fn adjacency(s: &Snapshot) -> Vec<Vec<(usize, usize)>> {
    let mut adj = vec![Vec::new(); s.buses.len()];
    for (k, b) in s.branches.iter().enumerate() {
        adj[b.from].push((b.to, k));
        adj[b.to].push((b.from, k));
    }
    adj
}

/// Where the diagram draws each bus, and whether that is the feeder's own map: its bus
/// coordinates where nearly every bus has them (a bus without takes its nearest neighbour's),
/// else the tree from the slack bus laid out by depth (x) and leaf order (y, downwards).
fn layout(s: &Snapshot, adj: &[Vec<(usize, usize)>]) -> (Vec<(f64, f64)>, bool) {
    let n = s.buses.len();
    let root = s.buses.iter().position(|b| b.slack).unwrap_or(0);
    let placed = s.buses.iter().filter(|b| b.xy.is_some()).count();
    if n > 1 && placed * 10 >= n * 9 {
        let mut xy: Vec<Option<(f64, f64)>> = s.buses.iter().map(|b| b.xy).collect();
        // Spread the known positions to the buses without, one ring of neighbours at a time.
        while xy.iter().any(Option::is_none) {
            let before = xy.iter().filter(|p| p.is_some()).count();
            for i in 0..n {
                if xy[i].is_none() {
                    xy[i] = adj[i].iter().find_map(|&(j, _)| xy[j]);
                }
            }
            if xy.iter().filter(|p| p.is_some()).count() == before {
                break;
            }
        }
        if xy.iter().all(Option::is_some) {
            return (
                xy.into_iter().map(|p| p.unwrap_or_default()).collect(),
                true,
            );
        }
    }
    let mut children = vec![Vec::new(); n];
    let mut seen = vec![false; n];
    let mut depth = vec![0usize; n];
    let mut queue = VecDeque::from([root]);
    seen[root] = true;
    while let Some(i) = queue.pop_front() {
        for &(j, _) in &adj[i] {
            if !seen[j] {
                seen[j] = true;
                depth[j] = depth[i] + 1;
                children[i].push(j);
                queue.push_back(j);
            }
        }
    }
    // y: leaves in depth-first order, parents at their first child's row.
    let mut y = vec![0f64; n];
    let mut next = 0.0;
    fn place(i: usize, children: &[Vec<usize>], y: &mut [f64], next: &mut f64) {
        if children[i].is_empty() {
            y[i] = *next;
            *next += 1.0;
            return;
        }
        for &c in &children[i] {
            place(c, children, y, next);
        }
        y[i] = y[children[i][0]];
    }
    place(root, &children, &mut y, &mut next);
    ((0..n).map(|i| (depth[i] as f64, y[i])).collect(), false)
}

/// The single-line diagram of `s`, on the feeder's map or as a tree ([`layout`]).
fn diagram(s: &Snapshot) -> Result<String, String> {
    let adj = adjacency(s);
    let (pos, map) = layout(s, &adj);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &pos {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if pos.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let width = 900u32;
    let height = if map {
        // The map's own aspect, within bounds.
        let aspect = (y1 - y0).max(1e-9) / (x1 - x0).max(1e-9);
        (f64::from(width) * aspect + 120.0).clamp(400.0, 1400.0) as u32
    } else {
        // Room between the rows for the homes below each bus and the names above.
        ((y1 - y0 + 1.0) * 40.0 + 200.0).clamp(280.0, 4000.0) as u32
    };
    let pad_x = (x1 - x0).max(1.0) * 0.03;
    let pad_y = (y1 - y0).max(1.0) * 0.03;
    let mut svg = String::new();
    {
        let root_area = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root_area.fill(&WHITE).map_err(|x| e(&x))?;
        let caption = format!(
            "Feeder at {} (branches by loading, buses by voltage)",
            gridmesh_types::units::utc(s.slot_start_ms / 1000)
        );
        let mut builder = ChartBuilder::on(&root_area);
        builder.caption(caption, ("sans-serif", 16)).margin(12);
        if !map {
            builder.x_label_area_size(36);
        }
        // The tree grows downwards with room below for the legend; the map keeps north up.
        let y_range = if map {
            (y0 - pad_y - (y1 - y0) * 0.12)..(y1 + pad_y)
        } else {
            (y1 + 6.0)..(y0 - 1.0)
        };
        let mut chart = builder
            .build_cartesian_2d((x0 - pad_x)..(x1 + pad_x), y_range)
            .map_err(|x| e(&x))?;
        if map {
            chart
                .configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .disable_y_axis()
                .draw()
                .map_err(|x| e(&x))?;
        } else {
            chart
                .configure_mesh()
                .disable_mesh()
                .disable_y_axis()
                .x_desc("distance from the grid connection (buses)")
                .draw()
                .map_err(|x| e(&x))?;
        }
        for b in &s.branches {
            let ((xa, ya), (xb, yb)) = (pos[b.from], pos[b.to]);
            let style =
                loading_colour(b.loading_percent).stroke_width(if b.transformer { 5 } else { 2 });
            let path = if map {
                vec![(xa, ya), (xb, yb)]
            } else {
                vec![(xa, ya), (xa, yb), (xb, yb)]
            };
            chart
                .draw_series(std::iter::once(PathElement::new(path, style)))
                .map_err(|x| e(&x))?;
        }
        let (lo, hi) = (s.vmin_pu, s.vmax_pu);
        let out_of_band = |b: &gridmesh_grid::snapshot::BusState| {
            b.vm_pu < lo || b.vm_pu > hi || b.phases.iter().any(|&(_, v)| v < lo || v > hi)
        };
        chart
            .draw_series(s.buses.iter().enumerate().map(|(i, b)| {
                let colour = if out_of_band(b) {
                    RGBColor(213, 94, 0)
                } else {
                    BLACK
                };
                Circle::new(pos[i], if b.slack { 6 } else { 3 }, colour.filled())
            }))
            .map_err(|x| e(&x))?;
        // Screen pixels in the chart's units (about: the plot area is the image less its
        // caption, margins and axis labels), to place marks and names beside the buses.
        let plot_px = (f64::from(width) - 40.0, f64::from(height) - 90.0);
        let y_span = if map {
            (y1 - y0) * 1.12 + 2.0 * pad_y
        } else {
            y1 - y0 + 7.0
        };
        let px = (
            (x1 - x0 + 2.0 * pad_x) / plot_px.0,
            // Screen-down in the chart's units: the map keeps north up, the tree grows down.
            if map { -1.0 } else { 1.0 } * y_span / plot_px.1,
        );
        // The homes beside their buses, side by side where several share one: with rooftop PV
        // (their registered devices say which; not what it makes, which is the owner's) or
        // without.
        let pv_colour = RGBColor(230, 159, 0);
        let home_colour = RGBColor(86, 180, 233);
        let mut at_bus = vec![0usize; pos.len()];
        let homes: Vec<((f64, f64), bool)> = s
            .homes
            .iter()
            .filter_map(|h| {
                let bus = h.bus.filter(|b| *b < pos.len())?;
                let k = at_bus[bus] as f64;
                at_bus[bus] += 1;
                let (x, y) = pos[bus];
                Some(((x + (9.0 + 9.0 * k) * px.0, y + 6.0 * px.1), h.has_pv))
            })
            .collect();
        chart
            .draw_series(homes.iter().map(|&(at, pv)| {
                let colour = if pv { pv_colour } else { home_colour };
                TriangleMarker::new(at, 5, colour.filled())
            }))
            .map_err(|x| e(&x))?;
        // Names: the grid connection, each transformer with its loading, and every bus where
        // there are few enough to read (the IEEE 13-node feeder's 650, 632, 671...). Black
        // text and dots turn light in the dark theme (`gridmesh_charts::themed`).
        let label = |text: String, at: (f64, f64)| {
            Text::new(text, at, ("sans-serif", 12).into_font().color(&BLACK))
        };
        let few = s.buses.len() <= 40;
        chart
            .draw_series(s.buses.iter().enumerate().filter_map(|(i, b)| {
                let text = if b.slack {
                    format!("grid connection {}", b.name)
                } else if few {
                    b.name.clone()
                } else {
                    return None;
                };
                Some(label(text, (pos[i].0 + 4.0 * px.0, pos[i].1 - 17.0 * px.1)))
            }))
            .map_err(|x| e(&x))?;
        chart
            .draw_series(s.branches.iter().filter(|b| b.transformer).map(|b| {
                let ((xa, ya), (xb, yb)) = (pos[b.from], pos[b.to]);
                let loading = b
                    .loading_percent
                    .map_or(String::new(), |p| format!(", {p:.0} % loaded"));
                label(
                    format!("transformer{loading}"),
                    ((xa + xb) / 2.0 - 40.0 * px.0, (ya + yb) / 2.0 + 8.0 * px.1),
                )
            }))
            .map_err(|x| e(&x))?;
        for (label, colour) in [("home", home_colour), ("home with rooftop PV", pv_colour)] {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(|x| e(&x))?
                .label(label)
                .legend(move |(x, y)| TriangleMarker::new((x + 8, y), 5, colour.filled()));
        }
        for (label, colour) in [
            ("under 50 % of rating", loading_colour(Some(10.0))),
            ("50-100 %", loading_colour(Some(60.0))),
            ("over 100 %", loading_colour(Some(120.0))),
        ] {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(|x| e(&x))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(3))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root_area.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// The chart's series labels in a box at `position`.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|x| x.to_string())
}

/// Phase colours (Okabe-Ito): a, b, c.
const PHASE_COLOURS: [RGBColor; 3] = [
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
];

/// Every bus's distance from the slack bus along the branches, km (lines without a length count
/// as none), by breadth-first search from the slack.
fn distances_km(s: &Snapshot, adj: &[Vec<(usize, usize)>]) -> Vec<Option<f64>> {
    let n = s.buses.len();
    let mut d = vec![None; n];
    let Some(root) = s.buses.iter().position(|b| b.slack) else {
        return d;
    };
    d[root] = Some(0.0);
    let mut queue = VecDeque::from([root]);
    while let Some(i) = queue.pop_front() {
        for &(j, k) in &adj[i] {
            if d[j].is_none() {
                d[j] = Some(d[i].unwrap_or(0.0) + s.branches[k].length_m.unwrap_or(0.0) / 1e3);
                queue.push_back(j);
            }
        }
    }
    d
}

/// The voltage profile of a feeder solved phase by phase: each phase's voltage along every
/// branch against the distance from the source, and the voltage band.
fn profile(s: &Snapshot) -> Result<String, String> {
    let adj = adjacency(s);
    let dist = distances_km(s, &adj);
    let phase_v = |i: usize, p: u8| {
        s.buses[i]
            .phases
            .iter()
            .find(|(q, _)| *q == p)
            .map(|&(_, v)| v)
    };
    let mut segments: Vec<(u8, [(f64, f64); 2])> = Vec::new();
    for b in &s.branches {
        let (Some(da), Some(db)) = (dist[b.from], dist[b.to]) else {
            continue;
        };
        if s.buses[b.from].slack || s.buses[b.to].slack {
            continue;
        }
        for p in 1..=3u8 {
            if let (Some(va), Some(vb)) = (phase_v(b.from, p), phase_v(b.to, p)) {
                segments.push((p, [(da, va), (db, vb)]));
            }
        }
    }
    let far = dist.iter().flatten().copied().fold(0.0, f64::max).max(1e-3);
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for (_, seg) in &segments {
        for &(_, v) in seg {
            (lo, hi) = (lo.min(v), hi.max(v));
        }
    }
    if lo > hi {
        (lo, hi) = (1.0, 1.0);
    }
    // The phases fill the chart; a limit within 0.02 pu of them is shown too.
    if s.vmin_pu > lo - 0.02 {
        lo = lo.min(s.vmin_pu);
    }
    if s.vmax_pu < hi + 0.02 {
        hi = hi.max(s.vmax_pu);
    }
    let pad = ((hi - lo) * 0.1).max(0.005);
    let mut svg = String::new();
    {
        let root_area = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root_area.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root_area)
            .caption(
                format!(
                    "Voltage profile by phase at {}",
                    gridmesh_types::units::utc(s.slot_start_ms / 1000)
                ),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..far * 1.02, (lo - pad)..(hi + pad))
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .light_line_style(BLACK.mix(0.06))
            .x_desc("distance from the source (km)")
            .y_desc("voltage to neutral (pu)")
            .draw()
            .map_err(|x| e(&x))?;
        for (band, label) in [(s.vmin_pu, "lower limit"), (s.vmax_pu, "upper limit")] {
            if band < lo - pad || band > hi + pad {
                continue;
            }
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.0, band), (far * 1.02, band)],
                    BLACK.mix(0.55).stroke_width(1),
                )))
                .map_err(|x| e(&x))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{label} {band} pu"),
                    (far * 0.01, band),
                    ("sans-serif", 12).into_font().color(&BLACK.mix(0.7)),
                )))
                .map_err(|x| e(&x))?;
        }
        for (k, name) in ["phase a", "phase b", "phase c"].iter().enumerate() {
            let colour = PHASE_COLOURS[k];
            let p = k as u8 + 1;
            chart
                .draw_series(
                    segments
                        .iter()
                        .filter(|(q, _)| *q == p)
                        .map(|(_, seg)| PathElement::new(seg.to_vec(), colour.stroke_width(2))),
                )
                .map_err(|x| e(&x))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(3))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root_area.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// The feeder's single-line diagram at the latest slot, SVG.
#[utoipa::path(get, path = "/v1/charts/feeder.svg",
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_feeder_chart(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let latest = s.feeder.lock().expect("feeder lock").latest.clone();
    let latest = latest.ok_or_else(|| ApiError::not_found("nothing solves this node's feeder"))?;
    Ok(crate::api_dashboard::svg(diagram(&latest)))
}

/// The voltage profile by phase at the latest slot, SVG (a feeder solved phase by phase).
#[utoipa::path(get, path = "/v1/charts/feeder-profile.svg",
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_feeder_profile(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let latest = s.feeder.lock().expect("feeder lock").latest.clone();
    let latest = latest.ok_or_else(|| ApiError::not_found("nothing solves this node's feeder"))?;
    if latest.buses.iter().all(|b| b.phases.is_empty()) {
        return Err(ApiError::not_found(
            "this node's feeder is solved balanced: it has no phases to profile",
        ));
    }
    Ok(crate::api_dashboard::svg(profile(&latest)))
}
