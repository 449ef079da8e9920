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
const MIN_CLEAR_KW: f64 = 0.05;

impl Forecaster for SmartPersistence {
    fn name(&self) -> &'static str {
        "smart-persistence"
    }
    fn forecast(&self, y: &[f64], origin: usize, horizon: usize, ctx: &Context) -> Vec<f64> {
        let Some(cs) = ctx.clear_sky_kw else {
            return Persistence.forecast(y, origin, horizon, ctx);
        };
        // The last 4 daylight slots before the origin (within the last day).
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
        let k = if den > 0.0 { (num / den).min(1.2) } else { 0.7 };
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
