//! A bounded dual simplex for the home's programs: a few hundred columns, under a hundred rows,
//! solved hundreds of times a simulated day.
//!
//! The basis inverse is kept dense and explicit (a row of it is the pivot row's multipliers, a
//! rank-one update per pivot), which at this size costs a few microseconds a pivot. The ratio
//! test passes the breakpoints of boxed columns while the leaving row stays infeasible (bound
//! flipping), so one pivot can move many columns; nearly every column here is boxed. A solve
//! starts from any basis the caller gives (a crash from the program's structure, or an earlier
//! optimum), since the dual simplex only needs the nonbasic columns at the bounds their reduced
//! costs ask for.
//!
//! It knows nothing of homes: [`crate::lp`] turns a program into its columns and rows, and falls
//! back to microlp on any outcome other than a verified optimum.

use crate::lp::{Lp, Sense};

/// A basic value this far outside its bounds is infeasible.
const TOL_PRIMAL: f64 = 1e-9;
/// A reduced cost this far on the wrong side is a dual infeasibility.
const TOL_DUAL: f64 = 1e-9;
/// The least pivot element taken.
const TOL_PIVOT: f64 = 1e-9;
/// The check of an optimum found: residuals and reduced costs, relative to the data's scale.
const TOL_CHECK: f64 = 1e-7;
/// The bound given to a column without one, where its reduced cost points that way at the start.
const ARTIFICIAL_BOUND: f64 = 1e6;
/// Pivots between fresh inversions of the basis.
const REINVERT_PIVOTS: usize = 120;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Basic,
    Lower,
    Upper,
}

/// How a solve ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Optimal,
    /// A row no pivot can make feasible: the program has no feasible point.
    Infeasible,
    /// Not solved here (numerical trouble, an artificial bound at the optimum, too many pivots):
    /// another solver should.
    Failed(&'static str),
}

/// A program in the form `A x + s = b` with bounds on `x` and the row activities `s` (the
/// logical columns, `n..n + m`), and a basis of it.
#[derive(Clone, Debug)]
pub struct Simplex {
    m: usize,
    n: usize,
    col_start: Vec<usize>,
    col_row: Vec<usize>,
    col_val: Vec<f64>,
    cost: Vec<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
    artificial: Vec<bool>,
    b: Vec<f64>,
    /// The basic column of each basis position.
    head: Vec<usize>,
    at: Vec<At>,
    x: Vec<f64>,
    /// Reduced costs (of nonbasic columns; zero for basic ones).
    d: Vec<f64>,
    /// The basis inverse, row-major `m × m`: row `i` belongs to position `i`.
    inv: Vec<f64>,
    /// Dual steepest-edge weights: the squared norm of each row of `inv`.
    weight: Vec<f64>,
    since_inversion: usize,
    /// Pivots taken, over every solve of this program.
    pub pivots: usize,
    // Scratch, kept between pivots.
    alpha_row: Vec<f64>,
    alpha_col: Vec<f64>,
    breaks: Vec<(f64, usize, f64)>,
    moved: Vec<(usize, f64)>,
    /// The columns the pivot row reaches (nonzero in `alpha_row`, `marked`).
    touched: Vec<usize>,
    marked: Vec<bool>,
    row_start: Vec<usize>,
    row_col: Vec<usize>,
    row_val: Vec<f64>,
}

impl Simplex {
    /// The program `lp` (continuous columns only), its basis: the column given for each row in
    /// `crash` where it keeps the basis invertible, the row's own logical elsewhere
    /// ([`Simplex::from_bases`]).
    pub fn new(lp: &Lp, crash: Option<&[Option<usize>]>) -> Result<Simplex, Stop> {
        Simplex::from_bases(lp, crash.as_slice())
    }

    /// [`Simplex::new`] from the first of `crashes` that inverts, each repaired where singular
    /// (a column that depends on the others leaves for the logical of a row without a pivot);
    /// the rows' logicals where none does.
    pub fn from_bases(lp: &Lp, crashes: &[&[Option<usize>]]) -> Result<Simplex, Stop> {
        let (m, n) = (lp.rows.len(), lp.names.len());
        let mut counts = vec![0usize; n + 1];
        for r in &lp.rows {
            for &(j, _) in &r.coeffs {
                counts[j + 1] += 1;
            }
        }
        for j in 0..n {
            counts[j + 1] += counts[j];
        }
        let col_start = counts.clone();
        let mut fill = counts;
        let nnz = col_start[n];
        let (mut col_row, mut col_val) = (vec![0; nnz], vec![0.0; nnz]);
        for (i, r) in lp.rows.iter().enumerate() {
            for &(j, v) in &r.coeffs {
                col_row[fill[j]] = i;
                col_val[fill[j]] = v;
                fill[j] += 1;
            }
        }
        let mut row_start = Vec::with_capacity(m + 1);
        let (mut row_col, mut row_val) = (Vec::with_capacity(nnz), Vec::with_capacity(nnz));
        row_start.push(0);
        for r in &lp.rows {
            for &(j, v) in &r.coeffs {
                row_col.push(j);
                row_val.push(v);
            }
            row_start.push(row_col.len());
        }
        let mut lower = lp.lower.clone();
        let mut upper = lp.upper.clone();
        let mut cost = lp.objective.clone();
        for r in &lp.rows {
            let (lo, hi) = match r.sense {
                Sense::Le => (0.0, f64::INFINITY),
                Sense::Ge => (f64::NEG_INFINITY, 0.0),
                Sense::Eq => (0.0, 0.0),
            };
            lower.push(lo);
            upper.push(hi);
            cost.push(0.0);
        }
        if lower
            .iter()
            .zip(&upper)
            .any(|(l, u)| l > u || l.is_nan() || u.is_nan())
            || cost.iter().any(|c| !c.is_finite())
        {
            return Err(Stop::Failed("bounds or costs out of order"));
        }
        let mut s = Simplex {
            m,
            n,
            col_start,
            col_row,
            col_val,
            cost,
            lower,
            upper,
            artificial: vec![false; n + m],
            b: lp.rows.iter().map(|r| r.rhs).collect(),
            head: (n..n + m).collect(),
            at: vec![At::Lower; n + m],
            x: vec![0.0; n + m],
            d: vec![0.0; n + m],
            inv: Vec::new(),
            weight: vec![1.0; m],
            since_inversion: 0,
            pivots: 0,
            alpha_row: vec![0.0; n + m],
            alpha_col: vec![0.0; m],
            breaks: Vec::new(),
            moved: Vec::new(),
            touched: Vec::new(),
            marked: vec![false; n + m],
            row_start,
            row_col,
            row_val,
        };
        for i in 0..m {
            s.at[n + i] = At::Basic;
        }
        let logicals = s.head.clone();
        let mut inverted = false;
        for crash in crashes {
            for (i, c) in crash.iter().enumerate().take(m) {
                if let Some(j) = *c {
                    if j < n && s.at[j] != At::Basic && s.lower[j] < s.upper[j] {
                        s.at[s.head[i]] = At::Lower;
                        s.head[i] = j;
                        s.at[j] = At::Basic;
                    }
                }
            }
            if s.invert_repairing() {
                inverted = true;
                break;
            }
            for &j in &s.head {
                s.at[j] = At::Lower;
            }
            s.head.clone_from(&logicals);
            for &j in &s.head {
                s.at[j] = At::Basic;
            }
        }
        if !inverted {
            s.identity();
        }
        s.place_nonbasic();
        Ok(s)
    }

    /// The basic column of each basis position (`n..n + m` for the rows' logicals).
    pub fn head(&self) -> &[usize] {
        &self.head
    }

    /// Structural columns (the program's own; logicals follow them).
    pub fn columns(&self) -> usize {
        self.n
    }

    fn identity(&mut self) {
        let m = self.m;
        self.inv = vec![0.0; m * m];
        for i in 0..m {
            self.inv[i * m + i] = 1.0;
        }
        self.weight = vec![1.0; m];
    }

    fn column(&self, j: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let (structural, logical) = if j < self.n {
            (self.col_start[j]..self.col_start[j + 1], None)
        } else {
            (0..0, Some((j - self.n, 1.0)))
        };
        structural
            .map(|k| (self.col_row[k], self.col_val[k]))
            .chain(logical)
    }

    fn boxed(&self, j: usize) -> bool {
        self.lower[j].is_finite() && self.upper[j].is_finite() && !self.artificial[j]
    }

    /// Duals from the basis, `y = c_B B⁻¹`.
    fn duals(&self) -> Vec<f64> {
        let m = self.m;
        let mut y = vec![0.0; m];
        for (i, &j) in self.head.iter().enumerate() {
            let c = self.cost[j];
            if c != 0.0 {
                for (yk, v) in y.iter_mut().zip(&self.inv[i * m..(i + 1) * m]) {
                    *yk += c * v;
                }
            }
        }
        y
    }

    fn reduced_costs(&mut self) {
        let y = self.duals();
        for j in 0..self.n + self.m {
            self.d[j] = if self.at[j] == At::Basic {
                0.0
            } else {
                self.cost[j] - self.column(j).map(|(i, v)| y[i] * v).sum::<f64>()
            };
        }
    }

    /// Every nonbasic column at the bound its reduced cost asks for (an artificial one where it
    /// has none that way), then the basic values.
    fn place_nonbasic(&mut self) {
        self.reduced_costs();
        for j in 0..self.n + self.m {
            if self.at[j] == At::Basic {
                continue;
            }
            let d = self.d[j];
            let (lo, hi) = (self.lower[j].is_finite(), self.upper[j].is_finite());
            self.at[j] = if d >= 0.0 {
                if lo {
                    At::Lower
                } else if hi && d <= TOL_DUAL {
                    At::Upper
                } else {
                    self.lower[j] = -ARTIFICIAL_BOUND;
                    self.artificial[j] = true;
                    At::Lower
                }
            } else if hi {
                At::Upper
            } else if lo && d >= -TOL_DUAL {
                At::Lower
            } else {
                self.upper[j] = ARTIFICIAL_BOUND;
                self.artificial[j] = true;
                At::Upper
            };
            self.x[j] = match self.at[j] {
                At::Lower => self.lower[j],
                _ => self.upper[j],
            };
        }
        self.basic_values();
    }

    /// `x_B = B⁻¹ (b − N x_N)`.
    fn basic_values(&mut self) {
        let m = self.m;
        let mut rhs = self.b.clone();
        for j in 0..self.n + m {
            if self.at[j] != At::Basic && self.x[j] != 0.0 {
                let xj = self.x[j];
                for (i, v) in self.column(j) {
                    rhs[i] -= v * xj;
                }
            }
        }
        for i in 0..m {
            let v = dot(&self.inv[i * m..(i + 1) * m], &rhs);
            self.x[self.head[i]] = v;
        }
    }

    /// The basis inverse afresh: Gauss-Jordan with the rows that hold each column listed, so
    /// that a sparse, nearly triangular basis costs about `m²`; partial pivoting that keeps the
    /// diagonal where it is within a thousandth of the column's largest. False where the basis
    /// is singular.
    fn invert(&mut self) -> bool {
        self.invert_in_scratch(false)
    }

    /// [`Simplex::invert`], a singular basis first repaired: each column that depends on the
    /// ones before it leaves for the logical of a row no column pivoted on. For a basis made
    /// elsewhere (an earlier program's optimum), where most of it still fits.
    fn invert_repairing(&mut self) -> bool {
        self.invert_in_scratch(true)
    }

    fn invert_in_scratch(&mut self, repair: bool) -> bool {
        thread_local! {
            // The elimination's matrices, kept for the thread: a few hundred inversions a
            // simulated day would otherwise each allocate and fault in their pages.
            static SCRATCH: std::cell::RefCell<(Vec<f64>, Vec<f64>)> =
                const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
        }
        SCRATCH.with(|s| {
            let (left, right) = &mut *s.borrow_mut();
            self.invert_with(left, right, repair)
        })
    }

    fn invert_with(&mut self, left: &mut Vec<f64>, right: &mut Vec<f64>, repair: bool) -> bool {
        let m = self.m;
        left.clear();
        left.resize(m * m, 0.0);
        right.clear();
        right.resize(m * m, 0.0);
        let mut holders: Vec<Vec<usize>> = vec![Vec::new(); m];
        for (k, &j) in self.head.iter().enumerate() {
            for (i, v) in self.column(j) {
                left[i * m + k] = v;
                holders[k].push(i);
            }
        }
        for i in 0..m {
            right[i * m + i] = 1.0;
        }
        let mut used = vec![false; m];
        let mut pivot_of = vec![0; m];
        let mut nonzero = Vec::with_capacity(m);
        let mut dependent = Vec::new();
        for k in 0..m {
            let mut p = usize::MAX;
            let mut best = 0.0;
            for &i in &holders[k] {
                let v = left[i * m + k].abs();
                if !used[i] && v > best {
                    best = v;
                    p = i;
                }
            }
            if best < 1e-11 {
                if !repair {
                    return false;
                }
                dependent.push(k);
                continue;
            }
            if !used[k] && left[k * m + k].abs() >= 1e-3 * best {
                p = k;
            }
            used[p] = true;
            pivot_of[k] = p;
            let pivot = left[p * m + k];
            nonzero.clear();
            for c in 0..m {
                let v = &mut left[p * m + c];
                if *v != 0.0 {
                    *v /= pivot;
                    if c != k {
                        nonzero.push(c);
                    }
                }
            }
            for v in &mut right[p * m..(p + 1) * m] {
                *v /= pivot;
            }
            let rows = std::mem::take(&mut holders[k]);
            for &i in &rows {
                let f = left[i * m + k];
                if i == p || f == 0.0 {
                    continue;
                }
                left[i * m + k] = 0.0;
                for &c in &nonzero {
                    let was = left[i * m + c];
                    if was == 0.0 {
                        holders[c].push(i);
                    }
                    left[i * m + c] = was - f * left[p * m + c];
                }
                let (pr, ir) = if p < i {
                    let (a, b) = right.split_at_mut(i * m);
                    (&a[p * m..(p + 1) * m], &mut b[..m])
                } else {
                    let (a, b) = right.split_at_mut(p * m);
                    (&b[..m], &mut a[i * m..(i + 1) * m])
                };
                for (x, y) in ir.iter_mut().zip(pr) {
                    *x -= f * y;
                }
            }
        }
        if !dependent.is_empty() {
            // As many rows without a pivot as dependent columns: their logicals complete the
            // independent columns to a basis.
            for &k in &dependent {
                self.at[self.head[k]] = At::Lower;
            }
            let free = (0..m).filter(|&i| !used[i]);
            for (&k, i) in dependent.iter().zip(free) {
                self.head[k] = self.n + i;
                self.at[self.n + i] = At::Basic;
            }
            return self.invert_with(left, right, false);
        }
        // Basis position k's row of the inverse is the row that pivoted on column k.
        self.inv.resize(m * m, 0.0);
        for (row, &p) in self.inv.chunks_exact_mut(m).zip(&pivot_of) {
            row.copy_from_slice(&right[p * m..(p + 1) * m]);
        }
        self.weight = self.inv.chunks_exact(m).map(squared_norm).collect();
        self.since_inversion = 0;
        true
    }

    /// The structural columns' values.
    pub fn x(&self) -> &[f64] {
        &self.x[..self.n]
    }

    /// Fixes column `j` at `value` (within its bounds or not): the basis stays dual feasible, so
    /// [`Simplex::solve`] continues from here.
    pub fn fix(&mut self, j: usize, value: f64) {
        self.lower[j] = value;
        self.upper[j] = value;
        self.artificial[j] = false;
        if self.at[j] != At::Basic {
            let delta = value - self.x[j];
            self.x[j] = value;
            self.at[j] = At::Lower;
            if delta != 0.0 {
                self.shift_basics(&[(j, delta)]);
            }
        }
    }

    /// The basic values after nonbasic columns moved by the given amounts.
    fn shift_basics(&mut self, moved: &[(usize, f64)]) {
        let m = self.m;
        let mut change: Vec<(usize, f64)> = Vec::new();
        for &(j, delta) in moved {
            for (i, v) in self.column(j) {
                change.push((i, v * delta));
            }
        }
        for (row, &j) in self.inv.chunks_exact(m).zip(&self.head) {
            let v: f64 = change.iter().map(|&(k, c)| row[k] * c).sum();
            self.x[j] -= v;
        }
    }

    /// The dual simplex to an optimum, checked (residuals, bounds, reduced costs) before it is
    /// reported; a failed check inverts the basis afresh and goes on, once.
    pub fn solve(&mut self) -> Stop {
        let limit = 50 * (self.m + 10);
        let mut reinverted = false;
        for _ in 0..limit {
            if self.since_inversion >= REINVERT_PIVOTS {
                if !self.invert() {
                    return Stop::Failed("singular basis");
                }
                self.place_after_inversion();
            }
            match self.pivot() {
                Some(Stop::Optimal) => match self.check() {
                    Ok(()) => return Stop::Optimal,
                    Err(e) if reinverted => return Stop::Failed(e),
                    Err(_) => {
                        reinverted = true;
                        if !self.invert() {
                            return Stop::Failed("singular basis");
                        }
                        self.place_after_inversion();
                    }
                },
                Some(stop) => return stop,
                None => {}
            }
        }
        Stop::Failed("too many pivots")
    }

    /// Boxed columns whose reduced cost points past their bound move to the other; others with
    /// a reduced cost within the tolerance on the wrong side are taken as zero.
    fn restore_dual_feasibility(&mut self) {
        let mut moved = Vec::new();
        for j in 0..self.n + self.m {
            self.put_right(j, &mut moved);
        }
        if !moved.is_empty() {
            self.shift_basics(&moved);
        }
    }

    /// Column `j`, nonbasic, with its reduced cost on the wrong side of its bound: a boxed
    /// column moves to its other bound (into `moved`, the basic values to follow), any other
    /// within the tolerance has its reduced cost taken as zero.
    fn put_right(&mut self, j: usize, moved: &mut Vec<(usize, f64)>) {
        let wrong = match self.at[j] {
            At::Basic => 0.0,
            _ if self.lower[j] == self.upper[j] => 0.0,
            At::Lower => -self.d[j],
            At::Upper => self.d[j],
        };
        if wrong <= 0.0 {
            return;
        }
        if wrong > TOL_DUAL && self.boxed(j) {
            let (to, value) = match self.at[j] {
                At::Lower => (At::Upper, self.upper[j]),
                _ => (At::Lower, self.lower[j]),
            };
            moved.push((j, value - self.x[j]));
            self.at[j] = to;
            self.x[j] = value;
        } else {
            self.d[j] = 0.0;
        }
    }

    /// One pivot; `Some` where the solve ends.
    fn pivot(&mut self) -> Option<Stop> {
        let (m, n) = (self.m, self.n);
        // The leaving row: the largest infeasibility by dual steepest edge.
        let mut leave = None;
        let mut best = 0.0;
        for i in 0..m {
            let j = self.head[i];
            let v = self.x[j];
            let infeasible = if v < self.lower[j] - TOL_PRIMAL {
                self.lower[j] - v
            } else if v > self.upper[j] + TOL_PRIMAL {
                v - self.upper[j]
            } else {
                continue;
            };
            let score = infeasible * infeasible / self.weight[i].max(1e-12);
            if score > best {
                best = score;
                leave = Some(i);
            }
        }
        let Some(r) = leave else {
            return Some(Stop::Optimal);
        };
        let p = self.head[r];
        let to_upper = self.x[p] > self.upper[p];
        let bound_p = if to_upper {
            self.upper[p]
        } else {
            self.lower[p]
        };
        // The pivot row over the nonbasic columns that can move, and the breakpoints of the
        // dual step: (ratio, column, |alpha|).
        let rho = &self.inv[r * m..(r + 1) * m];
        let mut breaks = std::mem::take(&mut self.breaks);
        breaks.clear();
        // Row by row over the rows the multipliers reach: the columns they touch, once each.
        for j in self.touched.drain(..) {
            self.alpha_row[j] = 0.0;
            self.marked[j] = false;
        }
        for (i, &rv) in rho.iter().enumerate() {
            if rv == 0.0 {
                continue;
            }
            let logical = n + i;
            let row = (self.row_start[i]..self.row_start[i + 1])
                .map(|k| (self.row_col[k], self.row_val[k]))
                .chain(std::iter::once((logical, 1.0)));
            for (j, v) in row {
                if self.at[j] == At::Basic || self.lower[j] == self.upper[j] {
                    continue;
                }
                if !self.marked[j] {
                    self.marked[j] = true;
                    self.touched.push(j);
                }
                self.alpha_row[j] += rv * v;
            }
        }
        for &j in &self.touched {
            let a = self.alpha_row[j];
            let s = if to_upper { a } else { -a };
            let candidate = match self.at[j] {
                At::Lower => s > TOL_PIVOT,
                At::Upper => s < -TOL_PIVOT,
                At::Basic => false,
            };
            if candidate {
                breaks.push(((self.d[j] / s).max(0.0), j, a.abs()));
            }
        }
        if breaks.is_empty() {
            self.breaks = breaks;
            return Some(Stop::Infeasible);
        }
        breaks.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Pass boxed breakpoints while the leaving row stays infeasible.
        let mut slope = (self.x[p] - bound_p).abs();
        let mut k = 0;
        while k < breaks.len() {
            let (_, j, a) = breaks[k];
            if !self.boxed(j) {
                break;
            }
            let next = slope - a * (self.upper[j] - self.lower[j]);
            if next <= 0.0 {
                break;
            }
            slope = next;
            k += 1;
        }
        if k == breaks.len() {
            self.breaks = breaks;
            return Some(Stop::Infeasible);
        }
        // Among the ties at the stopping breakpoint, the largest pivot.
        let ratio = breaks[k].0;
        let mut enter = k;
        for (e, br) in breaks.iter().enumerate().skip(k + 1) {
            if br.0 > ratio + 1e-12 {
                break;
            }
            if br.2 > breaks[enter].2 {
                enter = e;
            }
        }
        let q = breaks[enter].1;
        self.breaks = breaks;
        let alpha_rq = self.alpha_row[q];
        // The dual step: q's reduced cost to zero.
        let t = self.d[q] / alpha_rq;
        for &j in &self.touched {
            self.d[j] -= t * self.alpha_row[j];
        }
        self.d[q] = 0.0;
        self.d[p] = -t;
        self.at[p] = if to_upper { At::Upper } else { At::Lower };
        self.at[q] = At::Basic;
        // The boxed columns whose breakpoints the step passed move to their other bound (p is
        // still basic: its bound comes with the primal step).
        let mut moved = std::mem::take(&mut self.moved);
        moved.clear();
        let touched = std::mem::take(&mut self.touched);
        for &j in &touched {
            if self.alpha_row[j] != 0.0 && j != q {
                self.put_right(j, &mut moved);
            }
        }
        self.touched = touched;
        if !moved.is_empty() {
            self.shift_basics(&moved);
        }
        self.moved = moved;
        // The entering column through the basis inverse.
        let (start, end) = if q < n {
            (self.col_start[q], self.col_start[q + 1])
        } else {
            (0, 0)
        };
        for (c, row) in self.alpha_col.iter_mut().zip(self.inv.chunks_exact(m)) {
            *c = if q < n {
                (start..end)
                    .map(|k| row[self.col_row[k]] * self.col_val[k])
                    .sum()
            } else {
                row[q - n]
            };
        }
        let alpha_q = self.alpha_col[r];
        if alpha_q.abs() < TOL_PIVOT || (alpha_q - alpha_rq).abs() > 1e-6 * (1.0 + alpha_q.abs()) {
            // The row and the column disagree: the inverse has drifted. The basis stays as
            // it was (q has not moved from its bound), inverted afresh.
            self.at[p] = At::Basic;
            self.at[q] = if self.x[q] == self.upper[q] {
                At::Upper
            } else {
                At::Lower
            };
            if !self.invert() {
                return Some(Stop::Failed("singular basis"));
            }
            self.place_after_inversion();
            return None;
        }
        // The primal step: p to its bound.
        let theta = (self.x[p] - bound_p) / alpha_q;
        for (i, &j) in self.head.iter().enumerate() {
            let a = self.alpha_col[i];
            if a != 0.0 {
                self.x[j] -= theta * a;
            }
        }
        self.x[q] += theta;
        self.x[p] = bound_p;
        self.head[r] = q;
        // The inverse and the weights.
        let (before, rest) = self.inv.split_at_mut(r * m);
        let (pivot_row, after) = rest.split_at_mut(m);
        for v in pivot_row.iter_mut() {
            *v /= alpha_q;
        }
        let rows = before.chunks_exact_mut(m).chain(after.chunks_exact_mut(m));
        for (i, row) in (0..m).filter(|&i| i != r).zip(rows) {
            let f = self.alpha_col[i];
            if f != 0.0 {
                for (x, pv) in row.iter_mut().zip(pivot_row.iter()) {
                    *x -= f * pv;
                }
                self.weight[i] = squared_norm(row);
            }
        }
        self.weight[r] = squared_norm(pivot_row);
        self.pivots += 1;
        self.since_inversion += 1;
        None
    }

    /// After an inversion (periodic, after a failed check, or forced by drift in a pivot):
    /// values and reduced costs afresh, and dual feasibility restored.
    fn place_after_inversion(&mut self) {
        self.basic_values();
        self.reduced_costs();
        self.restore_dual_feasibility();
    }

    /// The optimum's check: every row's residual, every bound, every reduced cost's sign, from
    /// duals computed afresh; no column left at an artificial bound.
    fn check(&mut self) -> Result<(), &'static str> {
        let m = self.m;
        let scale_b = 1.0 + self.b.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let mut residual = self.b.clone();
        for j in 0..self.n + m {
            let xj = self.x[j];
            if xj != 0.0 {
                for (i, v) in self.column(j) {
                    residual[i] -= v * xj;
                }
            }
        }
        if residual.iter().any(|r| r.abs() > TOL_CHECK * scale_b) {
            return Err("the rows' residuals are too large");
        }
        for j in 0..self.n + m {
            let tol = TOL_CHECK * (1.0 + self.x[j].abs());
            if self.x[j] < self.lower[j] - tol || self.x[j] > self.upper[j] + tol {
                return Err("a value outside its bounds");
            }
            if self.artificial[j] && self.at[j] != At::Basic {
                return Err("a column at an artificial bound");
            }
        }
        let scale_c = 1.0 + self.cost.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        self.reduced_costs();
        for j in 0..self.n + m {
            let tol = TOL_CHECK * scale_c;
            let bad = match self.at[j] {
                At::Basic => false,
                _ if self.lower[j] == self.upper[j] => false,
                At::Lower => self.d[j] < -tol,
                At::Upper => self.d[j] > tol,
            };
            if bad {
                return Err("a reduced cost of the wrong sign");
            }
        }
        // The tiny wrong signs within the tolerance, as zero for any solve that follows.
        for j in 0..self.n + m {
            let wrong = match self.at[j] {
                At::Basic => false,
                At::Lower => self.d[j] < 0.0,
                At::Upper => self.d[j] > 0.0,
            };
            if wrong {
                self.d[j] = 0.0;
            }
        }
        Ok(())
    }
}

/// `Σ v²`, in four independent sums (the compiler keeps them in vector lanes).
fn squared_norm(v: &[f64]) -> f64 {
    let mut lanes = [0.0; 4];
    let chunks = v.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x * x;
        }
    }
    lanes.iter().sum::<f64>() + rest.iter().map(|x| x * x).sum::<f64>()
}

/// `Σ a·b`, in four independent sums.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let rest: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f64>() + rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lp::ResolutionError;
    use rand::{Rng, SeedableRng};

    /// A program shaped like a home's: a store per chain with losses, a grid column each way
    /// with its price, draws within boxes, an energy row or two; sometimes infeasible.
    fn random_program(rng: &mut rand::rngs::StdRng) -> Lp {
        let steps = rng.gen_range(2..30);
        let stores = rng.gen_range(1..4);
        let mut lp = Lp::default();
        let mut balance: Vec<Vec<(usize, f64)>> = vec![Vec::new(); steps];
        for (t, row) in balance.iter_mut().enumerate() {
            let imp = lp.var(format!("imp{t}"), 0.0, rng.gen_range(3.0..20.0));
            let exp = lp.var(format!("exp{t}"), 0.0, rng.gen_range(0.0..8.0));
            let price = rng.gen_range(0.1..0.4);
            lp.objective[imp] = price;
            lp.objective[exp] = -price * rng.gen_range(0.0..0.9);
            row.push((imp, 1.0));
            row.push((exp, -1.0));
        }
        for _ in 0..stores {
            let power = rng.gen_range(1.0..6.0);
            let (lo, hi) = (rng.gen_range(0.0..3.0), rng.gen_range(5.0..12.0));
            let kept = rng.gen_range(0.8..1.0);
            let mut before: Option<usize> = None;
            let initial = rng.gen_range(lo..hi);
            for (t, row) in balance.iter_mut().enumerate() {
                let draw = lp.var(format!("draw{t}"), 0.0, power);
                let give = lp.var(format!("give{t}"), 0.0, power * rng.gen_range(0.0..1.0));
                lp.objective[draw] = 1e-6 * t as f64;
                let level = lp.var(format!("level{t}"), lo, hi);
                row.push((draw, -1.0));
                row.push((give, 1.0));
                let mut r = vec![(level, 1.0), (draw, -0.95), (give, 1.05)];
                let rhs = match before {
                    Some(b) => {
                        r.push((b, -kept));
                        -rng.gen_range(0.0..1.5)
                    }
                    None => kept * initial - rng.gen_range(0.0..1.5),
                };
                lp.row(r, Sense::Eq, rhs);
                before = Some(level);
            }
        }
        let net: Vec<f64> = (0..steps).map(|_| rng.gen_range(-4.0..6.0)).collect();
        for (row, rhs) in balance.into_iter().zip(net) {
            lp.row(row, Sense::Eq, rhs);
        }
        if rng.gen_bool(0.5) {
            let ev: Vec<(usize, f64)> = (0..steps)
                .map(|t| (lp.var(format!("ev{t}"), 0.0, rng.gen_range(0.0..7.0)), 0.25))
                .collect();
            let need = rng.gen_range(0.0..10.0);
            lp.row(ev, Sense::Ge, need);
        }
        if rng.gen_bool(0.3) {
            let cols: Vec<(usize, f64)> = (0..3).map(|j| (j, 1.0)).collect();
            lp.row(cols, Sense::Le, rng.gen_range(0.0..10.0));
        }
        lp
    }

    fn ours(lp: &Lp) -> (Stop, Simplex) {
        let mut s = Simplex::new(lp, lp.crash.as_deref()).expect("a well-formed program");
        (s.solve(), s)
    }

    #[test]
    fn a_small_program_reaches_its_textbook_optimum() {
        // max 3x + 2y s.t. x + y ≤ 4, x + 3y ≤ 6, x ≤ 3: optimum 11 at (3, 1).
        let mut lp = Lp::default();
        let x = lp.var("x".into(), 0.0, 3.0);
        let y = lp.var("y".into(), 0.0, f64::INFINITY);
        lp.objective = vec![-3.0, -2.0];
        lp.row(vec![(x, 1.0), (y, 1.0)], Sense::Le, 4.0);
        lp.row(vec![(x, 1.0), (y, 3.0)], Sense::Le, 6.0);
        let (stop, s) = ours(&lp);
        assert_eq!(stop, Stop::Optimal);
        assert!((s.x()[0] - 3.0).abs() < 1e-9 && (s.x()[1] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn an_unbounded_program_is_not_reported_as_solved_and_microlp_names_it() {
        // min −x − y, x − y ≤ 1, y free upward: unbounded along x = y.
        let mut lp = Lp::default();
        let x = lp.var("x".into(), 0.0, f64::INFINITY);
        let y = lp.var("y".into(), 0.0, f64::INFINITY);
        lp.objective = vec![-1.0, -1.0];
        lp.row(vec![(x, 1.0), (y, -1.0)], Sense::Le, 1.0);
        let (stop, _) = ours(&lp);
        assert!(matches!(stop, Stop::Failed(_)), "{stop:?}");
        assert_eq!(lp.solve_warm().err(), Some(ResolutionError::Unbounded));
    }

    #[test]
    fn random_home_programs_reach_microlps_optimum_and_verdict() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(22);
        let (mut optimal, mut infeasible, mut failed) = (0, 0, 0);
        for case in 0..400 {
            let lp = random_program(&mut rng);
            let (stop, s) = ours(&lp);
            let reference = lp.solve_microlp();
            match (stop, &reference) {
                (Stop::Optimal, Ok(r)) => {
                    let (a, b) = (lp.value(s.x()), lp.value(&r.x));
                    assert!(
                        (a - b).abs() <= 1e-7 * (1.0 + b.abs()),
                        "case {case}: {a} against microlp's {b}"
                    );
                    optimal += 1;
                }
                (Stop::Infeasible, Err(ResolutionError::Infeasible)) => infeasible += 1,
                (Stop::Failed(why), _) => {
                    eprintln!("case {case}: {why}");
                    failed += 1;
                }
                (stop, r) => panic!("case {case}: {stop:?} against microlp's {:?}", r.is_ok()),
            }
        }
        eprintln!("{optimal} optimal, {infeasible} infeasible, {failed} left to microlp");
        assert!(optimal > 200 && infeasible > 10, "{optimal} {infeasible}");
        assert!(failed <= 2, "{failed} of 400 left to microlp");
    }

    #[test]
    fn a_column_fixed_after_the_optimum_solves_as_the_fixed_program_does() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut compared = 0;
        for case in 0..200 {
            let lp = random_program(&mut rng);
            let (Stop::Optimal, s) = ours(&lp) else {
                continue;
            };
            let j = rng.gen_range(0..lp.names.len());
            let value = lp.lower[j] + (lp.upper[j] - lp.lower[j]).min(20.0) * rng.gen::<f64>();
            let mut again = s.clone();
            again.fix(j, value);
            let stop = again.solve();
            let mut fixed = lp.clone();
            fixed.lower[j] = value;
            fixed.upper[j] = value;
            match (stop, fixed.solve_microlp()) {
                (Stop::Optimal, Ok(r)) => {
                    let (a, b) = (fixed.value(again.x()), fixed.value(&r.x));
                    assert!(
                        (a - b).abs() <= 1e-7 * (1.0 + b.abs()),
                        "case {case}: {a} {b}"
                    );
                    compared += 1;
                }
                (Stop::Infeasible, Err(ResolutionError::Infeasible)) => {}
                (stop, r) => panic!("case {case}: {stop:?} against {:?}", r.is_ok()),
            }
        }
        assert!(compared > 80, "{compared}");
    }
}
