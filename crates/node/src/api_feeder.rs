//! The feeder, live: what the community's power flow looks like slot by slot, for the dashboard's
//! Network page. A node learns it from whoever solves the feeder's power flow next to it (today
//! the simulator driving the demo's node; `SimChain::feeder`); a node without one says so.
//!
//! `GET /v1/grid/feeder`: the latest slot (exchange at the transformer, load, PV, batteries, EVs,
//! losses, voltages, transformer loading) and the last day's community figures (self-sufficiency,
//! peak import and export, losses, slots outside the voltage band or over a rating, islanded
//! slots). `GET /v1/charts/feeder.svg`: a single-line diagram, branches coloured by loading and
//! buses by voltage. Keeps [`RECENT_SLOTS`] slots.

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
    /// Positive: discharging.
    pub battery_kw: f64,
    pub ev_kw: f64,
    pub losses_kw: f64,
    pub min_vm_pu: Option<f64>,
    pub max_vm_pu: Option<f64>,
    pub transformer_loading_percent: f64,
    pub islanded: bool,
    pub not_served_kw: f64,
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
        },
        Some(latest) => FeederView {
            available: true,
            vmin_pu: Some(latest.vmin_pu),
            vmax_pu: Some(latest.vmax_pu),
            buses: latest.buses.len(),
            branches: latest.branches.len(),
            latest: Some(slot_view(latest)),
            day: Some(day_view(&l.recent)),
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

/// The single-line diagram of `s`: the tree from the slack bus laid out by depth (x) and leaf
/// order (y).
fn diagram(s: &Snapshot) -> Result<String, String> {
    let n = s.buses.len();
    let mut children = vec![Vec::new(); n];
    let mut seen = vec![false; n];
    let root = s.buses.iter().position(|b| b.slack).unwrap_or(0);
    let mut adj = vec![Vec::new(); n];
    for (k, b) in s.branches.iter().enumerate() {
        adj[b.from].push((b.to, k));
        adj[b.to].push((b.from, k));
    }
    // Breadth-first from the slack: each bus's parent branch.
    let mut parent_branch = vec![None; n];
    let mut depth = vec![0usize; n];
    let mut queue = VecDeque::from([root]);
    seen[root] = true;
    while let Some(i) = queue.pop_front() {
        for &(j, k) in &adj[i] {
            if !seen[j] {
                seen[j] = true;
                parent_branch[j] = Some(k);
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
    let max_depth = depth.iter().copied().max().unwrap_or(1).max(1) as f64;
    let rows = next.max(1.0);
    let height = (rows * 12.0 + 160.0).clamp(280.0, 2400.0) as u32;
    let width = 900u32;
    let mut svg = String::new();
    {
        let root_area = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root_area.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root_area)
            .caption(
                format!(
                    "Feeder at {} (branches by loading, buses by voltage)",
                    gridmesh_types::units::utc(s.slot_start_ms / 1000)
                ),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(36)
            // Room below the tree for the legend.
            .build_cartesian_2d(-0.2..max_depth + 0.2, (rows + 3.0)..-1.0)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_y_axis()
            .x_desc("distance from the grid connection (buses)")
            .draw()
            .map_err(|x| e(&x))?;
        let pos = |i: usize| (depth[i] as f64, y[i]);
        for (i, pb) in parent_branch.iter().enumerate() {
            let Some(k) = pb else { continue };
            let b = &s.branches[*k];
            let p = if b.from == i { b.to } else { b.from };
            let (x0, y0) = pos(p);
            let (x1, y1) = pos(i);
            let style =
                loading_colour(b.loading_percent).stroke_width(if b.transformer { 5 } else { 2 });
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x0, y0), (x0, y1), (x1, y1)],
                    style,
                )))
                .map_err(|x| e(&x))?;
        }
        let (lo, hi) = (s.vmin_pu, s.vmax_pu);
        chart
            .draw_series(s.buses.iter().enumerate().map(|(i, b)| {
                let out = b.vm_pu < lo || b.vm_pu > hi;
                let colour = if out {
                    RGBColor(213, 94, 0)
                } else {
                    RGBColor(40, 40, 40)
                };
                Circle::new(pos(i), if b.slack { 6 } else { 3 }, colour.filled())
            }))
            .map_err(|x| e(&x))?;
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
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|x| e(&x))?;
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
