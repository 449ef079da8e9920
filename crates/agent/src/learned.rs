//! A learned forecaster: gradient-boosted trees (smartcore's XGBoost regressor) on calendar
//! features, the recent past, the clear-sky profile (PV) and a weather forecast.
//!
//! The reference year has observed weather, not forecasts. A forecast is made from the observation
//! with an error that grows with the horizon (cloud cover ±1 octa at the origin to ±2.5 octas a day
//! ahead; temperature ±0.5 °C to ±2 °C), drawn deterministically from the (origin, target) pair, so
//! the model never sees the weather that actually happened. That error model is ours (documented
//! as such); the weather, the PV physics and the load profile are the reference data.
//!
//! PV: the target is the clear-sky index (power over clear-sky power) of each daylight slot, the
//! forecast that index times the clear-sky power. Load: the target is the power itself.

use crate::forecast::{recent_clear_sky_index, Context, Forecaster, MIN_CLEAR_KW};
use crate::SLOTS_PER_DAY;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::xgboost::{XGRegressor, XGRegressorParameters};

/// What is forecast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Pv,
    Load,
}

/// Known in advance, per slot: observed weather (turned into forecasts with horizon-dependent
/// error), the calendar's day type.
#[derive(Clone)]
pub struct Exogenous {
    pub cloud_octas: Vec<f64>,
    pub temperature_c: Vec<f64>,
    /// 0 Saturday, 1 Sunday/holiday, 2 working day (local days).
    pub day_type: Vec<u8>,
    /// PV only.
    pub clear_sky_kw: Option<Vec<f64>>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A standard normal drawn from the pair (origin, target, stream).
fn normal(origin: usize, target: usize, stream: u64) -> f64 {
    let a = splitmix((origin as u64) << 32 ^ target as u64 ^ stream << 60);
    let b = splitmix(a);
    let u1 = ((a >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl Exogenous {
    /// The cloud cover forecast for `target` issued at `origin`, octas.
    pub fn cloud_forecast(&self, origin: usize, target: usize) -> f64 {
        let h = (target - origin) as f64 / SLOTS_PER_DAY as f64;
        let obs = self.cloud_octas[target].min(8.0);
        (obs + (1.0 + 1.5 * h) * normal(origin, target, 1)).clamp(0.0, 8.0)
    }

    /// The temperature forecast for `target` issued at `origin`, °C.
    pub fn temperature_forecast(&self, origin: usize, target: usize) -> f64 {
        let h = (target - origin) as f64 / SLOTS_PER_DAY as f64;
        self.temperature_c[target] + (0.5 + 1.5 * h) * normal(origin, target, 2)
    }
}

fn clear_sky_index(y: &[f64], cs: &[f64], s: usize) -> f64 {
    if cs[s] > MIN_CLEAR_KW {
        (y[s] / cs[s]).min(1.5)
    } else {
        0.0
    }
}

/// The features of one (origin, target) pair from what was observed before `origin`.
fn features(t: Target, y: &[f64], ex: &Exogenous, origin: usize, target: usize) -> Vec<f64> {
    let h = target - origin;
    let slot = target % SLOTS_PER_DAY;
    let day = target / SLOTS_PER_DAY;
    let angle = |x: f64, period: f64| (2.0 * std::f64::consts::PI * x / period).sin_cos();
    let (s_sin, s_cos) = angle(slot as f64, SLOTS_PER_DAY as f64);
    let (d_sin, d_cos) = angle(day as f64, 365.0);
    let back = |period: usize| {
        let k = (target - origin) / period + 1;
        target.checked_sub(k * period)
    };
    match t {
        Target::Pv => {
            let cs = ex
                .clear_sky_kw
                .as_deref()
                .expect("PV needs the clear-sky profile");
            let k_last = recent_clear_sky_index(y, cs, origin).unwrap_or(0.7);
            let (mut dn, mut dd) = (0.0, 0.0);
            for s in origin.saturating_sub(SLOTS_PER_DAY)..origin {
                dn += y[s];
                dd += cs[s];
            }
            let k_day = if dd > 0.0 { dn / dd } else { 0.7 };
            let k_yesterday = back(SLOTS_PER_DAY).map_or(k_day, |s| clear_sky_index(y, cs, s));
            vec![
                h as f64,
                k_last,
                k_day,
                k_yesterday,
                cs[target],
                ex.cloud_forecast(origin, target),
                s_sin,
                s_cos,
                d_sin,
                d_cos,
            ]
        }
        Target::Load => {
            let last_hour = (origin.saturating_sub(4)..origin)
                .map(|s| y[s])
                .sum::<f64>()
                / 4.0;
            let yesterday = back(SLOTS_PER_DAY).map_or(last_hour, |s| y[s]);
            let last_week = back(7 * SLOTS_PER_DAY).map_or(yesterday, |s| y[s]);
            let day_mean = (origin.saturating_sub(SLOTS_PER_DAY)..origin)
                .map(|s| y[s])
                .sum::<f64>()
                / SLOTS_PER_DAY as f64;
            vec![
                h as f64,
                last_hour,
                yesterday,
                last_week,
                day_mean,
                f64::from(ex.day_type[target]),
                ex.temperature_forecast(origin, target),
                s_sin,
                s_cos,
                d_sin,
                d_cos,
            ]
        }
    }
}

type Model = XGRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>;

/// How much to train.
#[derive(Clone, Copy, Debug)]
pub struct TrainOptions {
    /// Every this many horizons of each origin become a training row.
    pub horizon_step: usize,
    pub trees: usize,
    pub max_depth: u16,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            horizon_step: 3,
            trees: 120,
            max_depth: 5,
        }
    }
}

/// Boosted trees trained on a series.
pub struct Learned {
    target: Target,
    exogenous: Exogenous,
    model: Model,
    pub training_rows: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("training the forecaster failed: {0}")]
pub struct TrainError(String);

impl Learned {
    /// Trains on pairs (origin, origin + h) for the given origins and every
    /// `options.horizon_step`-th horizon up to a day, skipping pairs whose target `excluded` says
    /// is held out (so no held-out value is ever a label). PV trains on daylight targets only.
    pub fn train(
        target: Target,
        y: &[f64],
        exogenous: Exogenous,
        origins: impl IntoIterator<Item = usize>,
        excluded: impl Fn(usize) -> bool,
        options: TrainOptions,
    ) -> Result<Learned, TrainError> {
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for origin in origins {
            for h in (0..SLOTS_PER_DAY).step_by(options.horizon_step.max(1)) {
                let t = origin + h;
                if t >= y.len() || excluded(t) {
                    continue;
                }
                let label = match (target, exogenous.clear_sky_kw.as_deref()) {
                    (Target::Pv, Some(cs)) if cs[t] > MIN_CLEAR_KW => clear_sky_index(y, cs, t),
                    (Target::Pv, _) => continue,
                    (Target::Load, _) => y[t],
                };
                rows.push(features(target, y, &exogenous, origin, t));
                labels.push(label);
            }
        }
        if rows.is_empty() {
            return Err(TrainError("no training rows".into()));
        }
        let x = DenseMatrix::from_2d_vec(&rows).map_err(|e| TrainError(e.to_string()))?;
        let params = XGRegressorParameters::default()
            .with_n_estimators(options.trees)
            .with_max_depth(options.max_depth)
            .with_learning_rate(0.1)
            .with_subsample(0.8)
            .with_seed(7);
        let model = Model::fit(&x, &labels, params).map_err(|e| TrainError(e.to_string()))?;
        Ok(Learned {
            target,
            exogenous,
            model,
            training_rows: rows.len(),
        })
    }
}

impl Forecaster for Learned {
    fn name(&self) -> &'static str {
        "boosted-trees"
    }

    fn forecast(&self, y: &[f64], origin: usize, horizon: usize, _: &Context) -> Vec<f64> {
        let rows: Vec<Vec<f64>> = (origin..origin + horizon)
            .map(|t| features(self.target, y, &self.exogenous, origin, t))
            .collect();
        let x = DenseMatrix::from_2d_vec(&rows).expect("rows of equal length");
        let p = self.model.predict(&x).expect("a trained model predicts");
        match (self.target, self.exogenous.clear_sky_kw.as_deref()) {
            (Target::Pv, Some(cs)) => (origin..origin + horizon)
                .zip(p)
                .map(|(t, k)| {
                    if cs[t] > MIN_CLEAR_KW {
                        k.clamp(0.0, 1.3) * cs[t]
                    } else {
                        0.0
                    }
                })
                .collect(),
            _ => p.into_iter().map(|v| v.max(0.0)).collect(),
        }
    }
}
