//! Rolling-origin evaluation: forecasts issued every `stride` slots over a span of the year, each
//! for the next `horizon` slots, scored against what happened, by horizon band.

use crate::forecast::{Context, Forecaster};
use serde::Serialize;

/// Horizon bands, in slots: (first, last] quarter hours ahead.
pub const BANDS: [(usize, usize, &str); 4] = [
    (0, 4, "0-1 h"),
    (4, 24, "1-6 h"),
    (24, 48, "6-12 h"),
    (48, 96, "12-24 h"),
];

#[derive(Clone, Debug, Serialize)]
pub struct BandScore {
    pub band: &'static str,
    pub mae_kw: f64,
    pub rmse_kw: f64,
    /// 1 − RMSE / RMSE of persistence (positive: better than persistence).
    pub skill: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Score {
    pub forecaster: &'static str,
    pub bands: Vec<BandScore>,
    pub mae_kw: f64,
    pub rmse_kw: f64,
    pub skill: Option<f64>,
}

/// Scores each forecaster on origins `from, from + stride, ...` up to `to` (exclusive), horizons
/// 1 to 96; skill against the first forecaster given (persistence).
pub fn evaluate(
    y: &[f64],
    forecasters: &[&dyn Forecaster],
    ctx: &Context,
    from: usize,
    to: usize,
    stride: usize,
) -> Vec<Score> {
    let origins: Vec<usize> = (from..to.min(y.len()).saturating_sub(95))
        .step_by(stride.max(1))
        .collect();
    evaluate_at(y, forecasters, ctx, &origins)
}

/// Scores each forecaster on the given origins (those with a whole day ahead in the series).
pub fn evaluate_at(
    y: &[f64],
    forecasters: &[&dyn Forecaster],
    ctx: &Context,
    origins: &[usize],
) -> Vec<Score> {
    let horizon = 96;
    let mut sums: Vec<Vec<(f64, f64, usize)>> =
        vec![vec![(0.0, 0.0, 0); BANDS.len()]; forecasters.len()];
    for &origin in origins.iter().filter(|o| **o + horizon <= y.len()) {
        for (f, fc) in forecasters.iter().enumerate() {
            let p = fc.forecast(y, origin, horizon, ctx);
            for (h, v) in p.iter().enumerate() {
                let e = v - y[origin + h];
                let b = BANDS
                    .iter()
                    .position(|(lo, hi, _)| h >= *lo && h < *hi)
                    .expect("a band");
                let s = &mut sums[f][b];
                s.0 += e.abs();
                s.1 += e * e;
                s.2 += 1;
            }
        }
    }
    let rmse = |s: &(f64, f64, usize)| (s.1 / s.2.max(1) as f64).sqrt();
    let base: Vec<f64> = sums[0].iter().map(rmse).collect();
    let base_all = {
        let t = sums[0]
            .iter()
            .fold((0.0, 0.0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
        rmse(&t)
    };
    forecasters
        .iter()
        .zip(&sums)
        .map(|(fc, s)| {
            let total = s
                .iter()
                .fold((0.0, 0.0, 0), |a, x| (a.0 + x.0, a.1 + x.1, a.2 + x.2));
            let r = rmse(&total);
            Score {
                forecaster: fc.name(),
                bands: BANDS
                    .iter()
                    .zip(s)
                    .zip(&base)
                    .map(|(((_, _, name), x), b)| BandScore {
                        band: name,
                        mae_kw: x.0 / x.2.max(1) as f64,
                        rmse_kw: rmse(x),
                        skill: (*b > 0.0).then(|| 1.0 - rmse(x) / b),
                    })
                    .collect(),
                mae_kw: total.0 / total.2.max(1) as f64,
                rmse_kw: r,
                skill: (base_all > 0.0).then(|| 1.0 - r / base_all),
            }
        })
        .collect()
}
