//! Forecasters: what a series will be over the next quarter hours, from what was observed before
//! the forecast is made (and what is known in advance: the calendar, the clear-sky profile).

use crate::SLOTS_PER_DAY;

/// What a forecaster may use besides the observed past.
pub struct Context<'a> {
    /// Clear-sky power of the same array at every slot (known in advance), for PV.
    pub clear_sky_kw: Option<&'a [f64]>,
}

/// A forecast of `horizon` slots from `origin` (the first slot not yet observed), using only
/// `observed[..origin]`.
pub trait Forecaster {
    fn name(&self) -> &'static str;
    fn forecast(&self, observed: &[f64], origin: usize, horizon: usize, ctx: &Context) -> Vec<f64>;
}

/// The latest observed value at the same time of day (`y[t − 96k]`, smallest k that reaches the
/// past): the standard day-ahead persistence.
pub struct Persistence;

impl Forecaster for Persistence {
    fn name(&self) -> &'static str {
        "persistence"
    }
    fn forecast(&self, y: &[f64], origin: usize, horizon: usize, _: &Context) -> Vec<f64> {
        same_time_before(y, origin, horizon, SLOTS_PER_DAY)
    }
}

/// The same slot of the latest observed week (`y[t − 672k]`).
pub struct SeasonalNaive;

impl Forecaster for SeasonalNaive {
    fn name(&self) -> &'static str {
        "seasonal-naive"
    }
    fn forecast(&self, y: &[f64], origin: usize, horizon: usize, _: &Context) -> Vec<f64> {
        same_time_before(y, origin, horizon, 7 * SLOTS_PER_DAY)
    }
}

fn same_time_before(y: &[f64], origin: usize, horizon: usize, period: usize) -> Vec<f64> {
    (origin..origin + horizon)
        .map(|t| {
            let back = (t - origin) / period + 1;
            t.checked_sub(back * period).map_or(0.0, |s| y[s])
        })
        .collect()
}

/// Smart persistence for PV: the clear-sky index of the last observed daylight hour (energy over
/// clear-sky energy) times the clear-sky power of each target slot.
pub struct SmartPersistence;

/// Below this clear-sky power (kW) a slot tells nothing about the sky.
pub(crate) const MIN_CLEAR_KW: f64 = 0.05;

/// The clear-sky index (energy over clear-sky energy) of the last 4 daylight slots before
/// `origin`, within the last day; `None` if the last day had no daylight.
pub(crate) fn recent_clear_sky_index(y: &[f64], cs: &[f64], origin: usize) -> Option<f64> {
    let (mut num, mut den, mut n) = (0.0, 0.0, 0);
    for s in (origin.saturating_sub(SLOTS_PER_DAY)..origin).rev() {
        if cs[s] > MIN_CLEAR_KW {
            num += y[s];
            den += cs[s];
            n += 1;
            if n == 4 {
                break;
            }
        }
    }
    (den > 0.0).then(|| num / den)
}

impl Forecaster for SmartPersistence {
    fn name(&self) -> &'static str {
        "smart-persistence"
    }
    fn forecast(&self, y: &[f64], origin: usize, horizon: usize, ctx: &Context) -> Vec<f64> {
        let Some(cs) = ctx.clear_sky_kw else {
            return Persistence.forecast(y, origin, horizon, ctx);
        };
        let k = recent_clear_sky_index(y, cs, origin).map_or(0.7, |k| k.min(1.2));
        (origin..origin + horizon).map(|t| k * cs[t]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_use_only_the_past() {
        let y: Vec<f64> = (0..3 * 672).map(|i| i as f64).collect();
        let ctx = Context { clear_sky_kw: None };
        let origin = 2 * 672 + 10;
        let p = Persistence.forecast(&y, origin, 200, &ctx);
        assert_eq!(p[0], (origin - 96) as f64);
        assert_eq!(
            p[96],
            (origin - 96) as f64,
            "t = origin + 96 uses the day before the origin"
        );
        assert_eq!(p[100], (origin + 100 - 192) as f64);
        assert!(p.iter().all(|v| (*v as usize) < origin));
        let s = SeasonalNaive.forecast(&y, origin, 10, &ctx);
        assert_eq!(s[0], (origin - 672) as f64);
        let cs = vec![2.0; y.len()];
        let flat = vec![1.0; y.len()];
        let ctx = Context {
            clear_sky_kw: Some(&cs),
        };
        let sp = SmartPersistence.forecast(&flat, origin, 5, &ctx);
        assert!(sp.iter().all(|v| (*v - 1.0).abs() < 1e-12));
    }
}

/// A home's agent's forecasts from `origin` over `horizon` slots: load by persistence, PV by
/// smart persistence against the array's clear-sky power (both use only what was observed before
/// `origin`).
pub fn home_forecast(
    load_kw: &[f64],
    pv_kw: &[f64],
    clear_sky_kw: &[f64],
    origin: usize,
    horizon: usize,
) -> (Vec<f64>, Vec<f64>) {
    let load = Persistence.forecast(load_kw, origin, horizon, &Context { clear_sky_kw: None });
    let pv = SmartPersistence.forecast(
        pv_kw,
        origin,
        horizon,
        &Context {
            clear_sky_kw: Some(clear_sky_kw),
        },
    );
    (load, pv)
}

/// The probability that an EV is plugged in at each of the next `horizon` slots from `origin`,
/// from its plug-in history (`plugged[..origin]`): the share of the last `weeks` weeks in which it
/// was plugged in at the same slot of the week (Laplace-smoothed, so an unseen slot is 0.5 weighed
/// as one observation).
pub fn ev_availability(plugged: &[bool], origin: usize, horizon: usize, weeks: usize) -> Vec<f64> {
    let week = 7 * SLOTS_PER_DAY;
    (origin..origin + horizon)
        .map(|t| {
            let (mut yes, mut n) = (0usize, 0usize);
            for k in 1..=weeks {
                let back = ((t - origin) / week + k) * week;
                if let Some(s) = t.checked_sub(back) {
                    n += 1;
                    yes += usize::from(plugged[s]);
                }
            }
            (yes as f64 + 0.5) / (n as f64 + 1.0)
        })
        .collect()
}

#[cfg(test)]
mod ev_tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A commuter: plugged in 18:00-07:00 on working days and all weekend, 10 % of evenings out
    /// late (plugged in at 22:00), 5 % of weekends away.
    fn commuter(weeks: usize, seed: u64) -> Vec<bool> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut out = Vec::new();
        for _ in 0..weeks * 7 {
            let day = out.len() / SLOTS_PER_DAY;
            let weekend = day % 7 >= 5;
            let away = weekend && rng.gen_bool(0.05);
            let late = rng.gen_bool(0.1);
            for slot in 0..SLOTS_PER_DAY {
                let home = if weekend {
                    !away
                } else {
                    let back = if late { 88 } else { 72 };
                    slot < 28 || slot >= back
                };
                out.push(home);
            }
        }
        out
    }

    #[test]
    fn plug_in_habits_forecast_better_than_yesterday() {
        let h = commuter(12, 5);
        let (mut brier_model, mut brier_persist, mut n) = (0.0, 0.0, 0.0);
        for origin in (8 * 7 * SLOTS_PER_DAY..h.len() - SLOTS_PER_DAY).step_by(SLOTS_PER_DAY) {
            let p = ev_availability(&h, origin, SLOTS_PER_DAY, 6);
            for (k, prob) in p.iter().enumerate() {
                let y = f64::from(u8::from(h[origin + k]));
                let yesterday = f64::from(u8::from(h[origin + k - SLOTS_PER_DAY]));
                brier_model += (prob - y).powi(2);
                brier_persist += (yesterday - y).powi(2);
                n += 1.0;
            }
        }
        let (m, p) = (brier_model / n, brier_persist / n);
        eprintln!("Brier score: plug-in habits {m:.4}, yesterday {p:.4}");
        assert!(m < p * 0.6, "{m} vs {p}");
    }
}
