//! Charts as SVG text: the line chart and colour palette that the simulator's HTML reports
//! (`gridmesh-sim`) and the node's dashboard (`gridmesh-node`) share, so both read alike.
//!
//! Knows nothing of the ledger, the node or the simulator: it draws numbers it is given.
//! `plotters` is re-exported for the drawings that are not line charts (the feeder's diagram).

pub use plotters;

use plotters::prelude::*;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("plot: {0}")]
pub struct ChartError(pub String);

/// One line of a plot: name, colour, points (x = slot of the run). A point whose y is NaN breaks
/// the line there (a slot without a value is not bridged); a point alone between breaks is drawn
/// as a dot.
pub struct Line<'a> {
    pub name: &'a str,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// Colour-blind-safe palette (Okabe-Ito).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
];

/// The colours plotters draws a chart's frame in, and what they become in dark mode: the
/// white background, black text and axes, light grid lines.
const DARK: [(&str, &str); 5] = [
    (r##"[fill="#FFFFFF"]"##, "fill:#0d1117"),
    (r##"[fill="#000000"]"##, "fill:#e6edf3"),
    (r##"[stroke="#000000"]"##, "stroke:#9198a1"),
    (r##"[stroke="#EBEBEB"]"##, "stroke:#30363d"),
    (r##"[stroke="#FFFFFF"]"##, "stroke:#0d1117"),
];

/// An SVG chart that follows the reader's light or dark setting: a style sheet inside the SVG
/// recolours its frame (background, text, axes, grid) where the reader prefers dark; the data's
/// colours (Okabe-Ito) read on both. Works for a chart shown as an image, which takes no style
/// from its page.
pub fn themed(svg: &str) -> String {
    let Some(open_end) = svg
        .find("<svg")
        .and_then(|i| svg[i..].find('>').map(|j| i + j + 1))
    else {
        return svg.to_string();
    };
    let rules: String = DARK
        .iter()
        .map(|(selector, style)| format!("{selector}{{{style}}}"))
        .collect();
    format!(
        "{}\n<style>@media (prefers-color-scheme: dark){{{rules}}}</style>{}",
        &svg[..open_end],
        &svg[open_end..]
    )
}

/// A line chart as an SVG document.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 320)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| ChartError(e.to_string());
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let pts = lines
            .iter()
            .flat_map(|l| l.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in pts {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if y1 - y0 < 1e-9 {
            y1 = y0 + 1.0;
        }
        let pad = (y1 - y0) * 0.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                x0..x1.max(x0 + 1e-9),
                (y0 - pad)..(y1 + pad + legend_room(y1 - y0, lines.len())),
            )
            .map_err(|x| e(&x))?;
        draw_mesh(&mut chart, x_label, y_label)?;
        draw_lines(&mut chart, lines)?;
        draw_legend(&mut chart)?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

type Plot<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The axes, their descriptions and the light grid every chart here draws.
fn draw_mesh<'a, DB: DrawingBackend + 'a>(
    chart: &mut Plot<'a, DB>,
    x_label: &str,
    y_label: &str,
) -> Result<(), ChartError> {
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .light_line_style(RGBColor(235, 235, 235))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(|x| ChartError(x.to_string()))
}

/// The legend every chart here draws: top right, in the room kept above the data.
fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut Plot<'a, DB>) -> Result<(), ChartError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|x| ChartError(x.to_string()))
}

/// A line's runs between missing values, each a series: a lone value as a dot.
fn runs<'a, DB: DrawingBackend + 'a>(
    l: &'a Line,
) -> impl Iterator<Item = LineSeries<DB, (f64, f64)>> + 'a {
    l.points
        .split(|(x, y)| !(x.is_finite() && y.is_finite()))
        .filter(|run| !run.is_empty())
        .map(|run| {
            let series = LineSeries::new(run.iter().copied(), l.color.stroke_width(2));
            if run.len() == 1 {
                series.point_size(2)
            } else {
                series
            }
        })
}

/// `lines` on the chart's (primary) axes, each named once in the legend.
fn draw_lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut Plot<'a, DB>,
    lines: &[Line],
) -> Result<(), ChartError> {
    for l in lines {
        for (k, run) in runs(l).enumerate() {
            let drawn = chart
                .draw_series(run)
                .map_err(|x| ChartError(x.to_string()))?;
            if k == 0 {
                drawn.label(l.name).legend(legend_sample(l.color));
            }
        }
    }
    Ok(())
}

/// The legend's sample of a line in `color`.
fn legend_sample(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
}

/// Room above the data for a legend of `lines` lines, in the data's units (`span` is the data's
/// range): the legend sits in the plot's top corner over no data.
fn legend_room(span: f64, lines: usize) -> f64 {
    span * (0.12 * lines as f64 + 0.05)
}

/// The x and y range of `lines`' finite points (a unit range where there are none, and at least a
/// small one on y).
fn bounds(lines: &[Line]) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in lines
        .iter()
        .flat_map(|l| l.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
    {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    (x0, x1.max(x0 + 1e-9), y0, y1)
}

/// Two quantities of different units over one x axis: `left` on the left axis, `right` on the
/// right one, each labelled with its unit; one legend for both. Lines break at missing values as
/// in [`line_chart`].
pub fn two_axis_chart(
    title: &str,
    x_label: &str,
    (left_label, left): (&str, &[Line]),
    (right_label, right): (&str, &[Line]),
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 320)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| ChartError(e.to_string());
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let (lx0, lx1, ly0, ly1) = bounds(left);
        let (rx0, rx1, ry0, ry1) = bounds(right);
        let (x0, x1) = (lx0.min(rx0), lx1.max(rx1));
        let n = left.len() + right.len();
        let (lpad, rpad) = ((ly1 - ly0) * 0.05, (ry1 - ry0) * 0.05);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(
                x0..x1,
                (ly0 - lpad)..(ly1 + lpad + legend_room(ly1 - ly0, n)),
            )
            .map_err(|x| e(&x))?
            .set_secondary_coord(
                x0..x1,
                (ry0 - rpad)..(ry1 + rpad + legend_room(ry1 - ry0, n)),
            );
        draw_mesh(&mut chart, x_label, left_label)?;
        chart
            .configure_secondary_axes()
            .y_desc(right_label)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(|x| e(&x))?;
        draw_lines(&mut chart, left)?;
        for l in right {
            for (k, run) in runs(l).enumerate() {
                let drawn = chart.draw_secondary_series(run).map_err(|x| e(&x))?;
                if k == 0 {
                    drawn.label(l.name).legend(legend_sample(l.color));
                }
            }
        }
        draw_legend(&mut chart)?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_themed_chart_recolours_its_frame_in_dark_mode_and_keeps_its_data() {
        let svg = line_chart(
            "t",
            "x",
            "y",
            &[Line {
                name: "a",
                color: PALETTE[0],
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
        )
        .unwrap();
        // What the style sheet selects is what plotters draws.
        for colour in [
            r##"fill="#FFFFFF""##,
            r##"fill="#000000""##,
            r##"stroke="#EBEBEB""##,
        ] {
            assert!(svg.contains(colour), "{colour}");
        }
        let dark = themed(&svg);
        assert!(dark.starts_with("<svg"), "{}", &dark[..80]);
        let style = dark
            .find("<style>@media (prefers-color-scheme: dark)")
            .unwrap();
        assert!(style < dark.find("<rect").unwrap(), "the style comes first");
        assert!(dark.contains(r##"[fill="#FFFFFF"]{fill:#0d1117}"##));
        // Nothing else changes.
        assert_eq!(
            dark.replace(&dark[style - 1..dark.find("</style>").unwrap() + 8], ""),
            svg
        );
        assert_eq!(themed("not svg"), "not svg");
    }

    #[test]
    fn two_quantities_get_an_axis_each_and_the_legend_covers_no_data() {
        let price = [Line {
            name: "price",
            color: PALETTE[0],
            points: vec![(0.0, 0.2), (1.0, 0.3)],
        }];
        let volume = [Line {
            name: "volume",
            color: PALETTE[1],
            points: vec![(0.0, 120.0), (1.0, 80.0)],
        }];
        let svg = two_axis_chart(
            "t",
            "h",
            ("price (tokens/kWh)", &price),
            ("volume (kWh)", &volume),
        )
        .unwrap();
        assert!(svg.contains("price (tokens/kWh)") && svg.contains("volume (kWh)"));
        // Both axes carry their own ticks: 120 kWh on the right one (text anchored at its
        // start, right of the plot), the prices on the left one (anchored at their end).
        let tick = |label: &str| {
            let at = svg
                .find(&format!("\n{label}\n</text>"))
                .unwrap_or_else(|| panic!("{label}"));
            let open = svg[..at].rfind("<text").unwrap();
            svg[open..at].to_string()
        };
        assert!(
            tick("120.0").contains("text-anchor=\"start\""),
            "{}",
            tick("120.0")
        );
        assert!(
            svg.contains("text-anchor=\"end\""),
            "the left axis's labels"
        );
        // The legend's room: the data's top stays below a fifth of the plot from its top.
        assert!((legend_room(1.0, 2) - 0.29).abs() < 1e-12);
    }

    #[test]
    fn a_line_breaks_where_a_value_is_missing() {
        let line = |points| {
            line_chart(
                "t",
                "x",
                "y",
                &[Line {
                    name: "p",
                    color: PALETTE[2],
                    points,
                }],
            )
            .unwrap()
        };
        let whole = line(vec![(0.0, 1.0), (1.0, 2.0), (2.0, 1.5), (3.0, 1.0)]);
        let broken = line(vec![
            (0.0, 1.0),
            (1.0, 2.0),
            (1.5, f64::NAN),
            (2.0, 1.5),
            (3.0, 1.0),
        ]);
        // The line's own colour (Okabe-Ito green), in its runs and its legend's sample.
        let polylines = |svg: &str| {
            svg.lines()
                .filter(|l| l.contains("<polyline") && l.contains("#009E73"))
                .count()
        };
        assert_eq!(polylines(&whole), 1 + 1, "one line and its legend's");
        assert_eq!(polylines(&broken), 2 + 1, "two runs and the legend's");
        // A value alone between gaps is a dot.
        let lone = line(vec![
            (0.0, 1.0),
            (0.5, f64::NAN),
            (1.0, 2.0),
            (1.5, f64::NAN),
        ]);
        assert_eq!(lone.matches("<circle").count(), 2, "{lone}");
    }
}
