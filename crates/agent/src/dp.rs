//! Exact plans without a solver for the homes whose program decouples into one store at a time,
//! by dynamic programming over convex piecewise-linear value functions.
//!
//! A store (a battery's charge, a building's or a tank's temperature, the energy an EV or a
//! deferrable load has had) moves from step to step as `x_t = kept_t·x_{t−1} + r_t + w_t`, where
//! `w_t` is what its device does in the step, within bounds, and `x_t` must stay within the
//! step's bounds. The step costs what the grid charges for the device's power on top of the
//! home's net load, `g_t(n_t + φ_t(w_t))`, plus the program's tie-breaking terms. The grid's
//! cost `g_t` is convex and nondecreasing in the home's net load (import price at or above the
//! export price, both at least 0: slope 0 while PV is curtailed beyond the export limit, the
//! export price while exporting, the import price while importing) and the device's map `φ_t` is
//! convex and increasing, so each step's cost is a convex piecewise-linear function of `w_t`.
//! The least cost of reaching each `x_t` is then one too, the infimal convolution of the last
//! one (scaled by `kept_t`) with the step's cost, which is a merge of their segments by slope;
//! the plan is read back from the optimum, step by step, from the same merges. The cost grows
//! with steps × segments (tens of microseconds for a day in the simulator's steps, where the
//! simplex takes a millisecond).
//!
//! Where it applies, and why it is exact:
//! - **One device** (a battery, an EV, one thermal store, one deferrable load): the program is
//!   exactly this one-store problem with the grid's full cost (a battery's charge and discharge
//!   are the two sides of one move). The program's tie-breaking terms are costs per step like
//!   any other, so among plans of equal cost the dynamic program and the simplex choose the same.
//! - **Several devices**: each is planned on its own at the import price (the grid's cost is at
//!   least the import price times the net load, so this is a relaxation). If the home then
//!   imports, within its import limit, in every step, the relaxation's optimum costs what the
//!   program would charge for it, so it is the program's optimum. Otherwise (the home exports
//!   somewhere, or hits its limit) the plan is left to the simplex.
//!
//! Not for programs with a negative price or an export price above the import price (the
//! grid's cost is no longer convex and nondecreasing, and the program may need binaries), or
//! with a flexibility event. [`crate::schedule::HomeProblem`] decides and falls back to the
//! linear program; tests check both reach the same optimum.

/// A segment of a convex piecewise-linear function: its length along the argument, its slope,
/// and (in an infimal convolution) whether it came from the step's cost.
#[derive(Clone, Copy, Debug)]
struct Seg {
    len: f64,
    slope: f64,
    step: bool,
}

/// A convex piecewise-linear function on `[left, left + Σ len]`: its value at `left` and its
/// segments by increasing slope.
#[derive(Clone, Debug)]
struct Pwl {
    left: f64,
    value: f64,
    segs: Vec<Seg>,
}

/// Lengths below this are dropped (kWh or K): far below what a device can do.
const TINY: f64 = 1e-12;
/// How far a bound may be missed by rounding before a program counts as infeasible.
const SLACK: f64 = 1e-9;

impl Pwl {
    fn point(x: f64) -> Pwl {
        Pwl {
            left: x,
            value: 0.0,
            segs: Vec::new(),
        }
    }

    fn right(&self) -> f64 {
        self.left + self.segs.iter().map(|s| s.len).sum::<f64>()
    }

    /// `x ↦ f(x / k)` for `k > 0`.
    fn scaled(mut self, k: f64) -> Pwl {
        self.left *= k;
        for s in &mut self.segs {
            s.len *= k;
            s.slope /= k;
        }
        self
    }

    /// `x ↦ min_w self(x − w) + step(w)`; the step's segments tagged.
    fn convolve(&self, step: &Pwl) -> Pwl {
        let mut segs = Vec::with_capacity(self.segs.len() + step.segs.len());
        let (mut a, mut b) = (self.segs.iter().peekable(), step.segs.iter().peekable());
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.slope < y.slope,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let s = if take_a {
                Seg {
                    step: false,
                    ..*a.next().expect("peeked")
                }
            } else {
                Seg {
                    step: true,
                    ..*b.next().expect("peeked")
                }
            };
            segs.push(s);
        }
        Pwl {
            left: self.left + step.left,
            value: self.value + step.value,
            segs,
        }
    }

    /// Restricted to `[lo, hi]`; `None` where that leaves nothing.
    fn clipped(&self, lo: f64, hi: f64) -> Option<Pwl> {
        if self.left > hi + SLACK || self.right() < lo - SLACK {
            return None;
        }
        let mut out = Pwl {
            left: self.left,
            value: self.value,
            segs: Vec::with_capacity(self.segs.len()),
        };
        let mut skip = (lo - self.left).max(0.0);
        for s in &self.segs {
            let cut = skip.min(s.len);
            skip -= cut;
            out.left += cut;
            out.value += cut * s.slope;
            if s.len - cut > TINY {
                out.segs.push(Seg {
                    len: s.len - cut,
                    ..*s
                });
            }
        }
        let mut excess = out.right() - hi;
        while excess > 0.0 {
            let Some(last) = out.segs.last_mut() else {
                break;
            };
            if last.len > excess + TINY {
                last.len -= excess;
                break;
            }
            excess -= last.len;
            out.segs.pop();
        }
        Some(out)
    }

    /// The least point (the leftmost among equals) and its value.
    fn argmin(&self) -> (f64, f64) {
        let (mut x, mut v) = (self.left, self.value);
        for s in self.segs.iter().take_while(|s| s.slope < 0.0) {
            x += s.len;
            v += s.len * s.slope;
        }
        (x, v)
    }

    /// In a convolution, the step's part of reaching `x`: its own left end plus its segments
    /// among those walked from the left to `x` (`step_left`: the step function's left end).
    fn step_part(&self, step_left: f64, x: f64) -> f64 {
        let mut left = x - self.left;
        let mut w = step_left;
        for s in &self.segs {
            if left <= 0.0 {
                break;
            }
            let take = left.min(s.len);
            if s.step {
                w += take;
            }
            left -= take;
        }
        w
    }
}

/// What the grid charges in one step for the home's net load `y` (kW held over the step):
/// import at `import_per_kw`, export up to `export_kw` at `export_per_kw` (revenue), PV
/// curtailed beyond it up to `pv_kw` at no cost, import up to `import_kw`. `linear`: the
/// import price on every `y`, unbounded (the relaxation of several devices).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub import_per_kw: f64,
    pub export_per_kw: f64,
    pub import_kw: f64,
    pub export_kw: f64,
    pub pv_kw: f64,
    pub linear: bool,
}

impl Grid {
    fn cost(&self, y: f64) -> f64 {
        if self.linear || y >= 0.0 {
            self.import_per_kw * y
        } else {
            -self.export_per_kw * (-y).min(self.export_kw)
        }
    }

    fn slope(&self, y: f64) -> f64 {
        if self.linear || y >= 0.0 {
            self.import_per_kw
        } else if -y <= self.export_kw {
            self.export_per_kw
        } else {
            0.0
        }
    }

    fn domain(&self) -> (f64, f64) {
        if self.linear {
            (f64::NEG_INFINITY, f64::INFINITY)
        } else {
            (-self.export_kw - self.pv_kw, self.import_kw)
        }
    }

    fn kinks(&self) -> [f64; 2] {
        if self.linear {
            [f64::NAN; 2]
        } else {
            [-self.export_kw, 0.0]
        }
    }

    /// Import, export and curtailment (kW) at net load `y`.
    pub fn split(&self, y: f64) -> (f64, f64, f64) {
        let out = (-y).max(0.0);
        (
            y.max(0.0),
            out.min(self.export_kw),
            (out - self.export_kw).max(0.0),
        )
    }
}

/// A device over one step: its move `w` within `[w_lo, w_hi]` puts `w·per_up` kW on the home's
/// bus for `w ≥ 0` and `w·per_down` for `w < 0`, and costs `w·tie_up` (or `w·tie_down`) beside
/// the grid (the program's tie-breaking terms).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Move {
    pub w_lo: f64,
    pub w_hi: f64,
    pub per_up: f64,
    pub per_down: f64,
    pub tie_up: f64,
    pub tie_down: f64,
}

impl Move {
    pub fn kw(&self, w: f64) -> f64 {
        if w >= 0.0 {
            w * self.per_up
        } else {
            w * self.per_down
        }
    }

    fn w_of(&self, kw: f64) -> f64 {
        if kw >= 0.0 {
            kw / self.per_up
        } else {
            kw / self.per_down
        }
    }

    /// `w ↦ g(n + kw(w)) + tie(w)` as a convex piecewise-linear function; `None` where no move
    /// keeps the net load within the grid's limits.
    fn cost(&self, g: &Grid, n: f64) -> Option<Pwl> {
        let (y_lo, y_hi) = g.domain();
        let lo = self.w_lo.max(self.w_of(y_lo - n));
        let hi = self.w_hi.min(self.w_of(y_hi - n));
        if lo > hi + SLACK {
            return None;
        }
        let hi = hi.max(lo);
        let mut cuts = vec![lo, hi];
        if lo < 0.0 && hi > 0.0 {
            cuts.push(0.0);
        }
        for k in g.kinks() {
            let w = self.w_of(k - n);
            if w > lo && w < hi {
                cuts.push(w);
            }
        }
        cuts.sort_by(f64::total_cmp);
        let at = |w: f64| {
            let tie = if w >= 0.0 {
                w * self.tie_up
            } else {
                w * self.tie_down
            };
            g.cost(n + self.kw(w)) + tie
        };
        let mut segs: Vec<Seg> = cuts
            .windows(2)
            .filter(|c| c[1] - c[0] > TINY)
            .map(|c| {
                let mid = 0.5 * (c[0] + c[1]);
                let (per, tie) = if mid >= 0.0 {
                    (self.per_up, self.tie_up)
                } else {
                    (self.per_down, self.tie_down)
                };
                Seg {
                    len: c[1] - c[0],
                    slope: g.slope(n + self.kw(mid)) * per + tie,
                    step: true,
                }
            })
            .collect();
        // Convex where the grid's cost is convex and nondecreasing and `per_down ≤ per_up`
        // (what the caller checks); sorted against rounding at equal slopes.
        debug_assert!(
            segs.windows(2)
                .all(|s| s[0].slope <= s[1].slope + 1e-9 * (1.0 + s[1].slope.abs())),
            "a step's cost is not convex: {segs:?}"
        );
        segs.sort_by(|a, b| a.slope.total_cmp(&b.slope));
        Some(Pwl {
            left: lo,
            value: at(lo),
            segs,
        })
    }
}

/// A store over the program's steps: from `initial`, `x_t = kept[t]·x_{t−1} + offset[t] + w_t`
/// within `bounds[t]`, the device's move per step in `moves`.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    pub initial: f64,
    pub kept: Vec<f64>,
    pub offset: Vec<f64>,
    pub bounds: Vec<(f64, f64)>,
    pub moves: Vec<Move>,
}

/// Why a store could not be planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoPlan {
    /// No move keeps the store and the grid within their limits: the program is infeasible.
    Infeasible,
}

impl Store {
    /// The least-cost moves per step against the grid per step (`net`: the home's net load
    /// without this device, kW), and their cost.
    pub fn plan(&self, grids: &[Grid], net: &[f64]) -> Result<(Vec<f64>, f64), NoPlan> {
        let n = self.moves.len();
        let mut f = Pwl::point(self.initial);
        // Per step: the convolution before clipping and the step function's left end.
        let mut merges: Vec<(Pwl, f64)> = Vec::with_capacity(n);
        for t in 0..n {
            let step = self.moves[t]
                .cost(&grids[t], net[t])
                .ok_or(NoPlan::Infeasible)?;
            let mut merged = f.scaled(self.kept[t]).convolve(&step);
            merged.left += self.offset[t];
            let (lo, hi) = self.bounds[t];
            f = merged.clipped(lo, hi).ok_or(NoPlan::Infeasible)?;
            merges.push((merged, step.left));
        }
        let (mut x, cost) = f.argmin();
        let mut w = vec![0.0; n];
        for t in (0..n).rev() {
            let (merged, step_left) = &merges[t];
            let (lo, hi) = self.bounds[t];
            x = x.clamp(lo, hi);
            w[t] = merged.step_part(*step_left, x);
            x = (x - self.offset[t] - w[t]) / self.kept[t];
        }
        Ok((w, cost))
    }

    /// The store's level at each step's end under moves `w`.
    pub fn levels(&self, w: &[f64]) -> Vec<f64> {
        let mut x = self.initial;
        w.iter()
            .enumerate()
            .map(|(t, w)| {
                x = self.kept[t] * x + self.offset[t] + w;
                x
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(import: f64, export: f64) -> Grid {
        Grid {
            import_per_kw: import,
            export_per_kw: export,
            import_kw: 10.0,
            export_kw: 5.0,
            pv_kw: 3.0,
            linear: false,
        }
    }

    /// Every move in a fine grid of moves, by brute force over two steps.
    #[test]
    fn a_two_step_store_reaches_the_brute_force_optimum() {
        let mv = Move {
            w_lo: -2.0,
            w_hi: 2.0,
            per_up: 1.1,
            per_down: 0.9,
            tie_up: 1e-4,
            tie_down: -1e-4,
        };
        let store = Store {
            initial: 1.0,
            kept: vec![0.95, 0.95],
            offset: vec![0.1, -0.2],
            bounds: vec![(0.0, 4.0), (0.5, 4.0)],
            moves: vec![mv, mv],
        };
        let grids = [grid(0.1, 0.05), grid(0.4, 0.05)];
        let net = [-1.0, 0.8];
        let (w, cost) = store.plan(&grids, &net).expect("feasible");
        let levels = store.levels(&w);
        for (t, x) in levels.iter().enumerate() {
            assert!(x + 1e-9 >= store.bounds[t].0 && *x <= store.bounds[t].1 + 1e-9);
        }
        let step_cost = |t: usize, w: f64| {
            let tie = if w >= 0.0 {
                w * mv.tie_up
            } else {
                w * mv.tie_down
            };
            grids[t].cost(net[t] + mv.kw(w)) + tie
        };
        assert!((step_cost(0, w[0]) + step_cost(1, w[1]) - cost).abs() < 1e-9);
        let mut best = f64::INFINITY;
        let k = 400;
        for i in 0..=k {
            let w0 = -2.0 + 4.0 * i as f64 / k as f64;
            let x0 = 0.95 * 1.0 + 0.1 + w0;
            if !(0.0..=4.0).contains(&x0) {
                continue;
            }
            for j in 0..=k {
                let w1 = -2.0 + 4.0 * j as f64 / k as f64;
                let x1 = 0.95 * x0 - 0.2 + w1;
                if (0.5..=4.0).contains(&x1) {
                    best = best.min(step_cost(0, w0) + step_cost(1, w1));
                }
            }
        }
        assert!(cost <= best + 1e-9, "{cost} above brute force {best}");
        assert!(cost >= best - 0.01, "{cost} far below brute force {best}");
    }

    #[test]
    fn a_store_that_cannot_keep_its_bounds_is_infeasible() {
        let mv = Move {
            w_lo: 0.0,
            w_hi: 1.0,
            per_up: 1.0,
            per_down: 1.0,
            tie_up: 0.0,
            tie_down: 0.0,
        };
        let store = Store {
            initial: 0.0,
            kept: vec![1.0],
            offset: vec![0.0],
            bounds: vec![(2.0, 3.0)],
            moves: vec![mv],
        };
        assert_eq!(
            store.plan(&[grid(0.2, 0.1)], &[0.0]),
            Err(NoPlan::Infeasible)
        );
    }
}
