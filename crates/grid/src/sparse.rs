//! A sparse LU for the matrices of power networks: square, structurally symmetric (the
//! admittance matrix, a Newton-Raphson Jacobian), sparse as the network is. The ordering is
//! minimum degree on the graph of the buses (a bus's rows eliminated together), fill and all;
//! the symbolic step then writes every
//! elimination update as a triple of slots, so a numeric factorisation is one flat loop and a
//! solve two passes over the factors. No pivoting: a power network's pivots stay on the
//! diagonal, and a pivot that vanishes is reported ([`SparseError::ZeroPivot`]) for the caller
//! to fall back on a pivoting solver.
//!
//! For a radial feeder the ordering eliminates from the leaves and nothing fills in, so the
//! factors are as sparse as the network and a solve costs a few multiplications per branch.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::{Add, Div, Mul, Sub};

/// What the factorisation computes in: `f64` or `faer::c64`.
pub(crate) trait Scalar:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + PartialEq
{
    const ZERO: Self;
    /// The magnitude squared (spares `hypot`; pivots are only compared).
    fn magnitude_sqr(self) -> f64;
}

impl Scalar for f64 {
    const ZERO: f64 = 0.0;
    fn magnitude_sqr(self) -> f64 {
        self * self
    }
}

impl Scalar for faer::c64 {
    const ZERO: faer::c64 = faer::c64::ZERO;
    fn magnitude_sqr(self) -> f64 {
        self.norm_sqr()
    }
}

/// A pivot below this fraction of its row's own diagonal entry is what cancellation leaves of
/// a singular matrix (1e-16 of it), not a value: a floating winding's common mode, held by its
/// anti-float admittance, is 1e-8 of its diagonal.
pub(crate) const PIVOT_MIN_RATIO: f64 = 1e-12;

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum SparseError {
    #[error("an entry ({0}, {1}) is outside the {2}×{2} matrix")]
    OutOfRange(usize, usize, usize),
    #[error("the pivot of row {0} vanished")]
    ZeroPivot(usize),
}

/// The ordering and the factors' structure for one pattern.
#[derive(Clone, Debug)]
pub(crate) struct Symbolic {
    n: usize,
    /// The row (= column) eliminated at each step.
    order: Vec<u32>,
    /// Per step `k`: the slot of the pivot.
    diag: Vec<u32>,
    /// Per step `k`, `lower[start[k]..start[k + 1]]`: the rows of column `k` of L below the
    /// pivot, which are also the columns of row `k` of U right of it. Their values sit at
    /// `n + t` (L) and `n + m + t` (U) for entry `t` of `lower`, `m` its length.
    start: Vec<u32>,
    lower: Vec<u32>,
    /// Per step `k`, `updates[ustart[k]..ustart[k + 1]]`: `(target, l, u)`: `target -= l × u`.
    ustart: Vec<u32>,
    updates: Vec<(u32, u32, u32)>,
    /// The slot each entry of the input pattern adds into.
    input_slot: Vec<u32>,
    slots: usize,
}

impl Symbolic {
    /// Orders `entries` (`(row, column)`, repeats allowed) of an `n × n` matrix row by row; the
    /// pattern is made symmetric. The solvers order by blocks ([`Symbolic::new_blocked`]); the
    /// tests check that against this.
    #[cfg(test)]
    pub(crate) fn new(n: usize, entries: &[(usize, usize)]) -> Result<Symbolic, SparseError> {
        let adj = adjacency(n, entries.iter().copied())?;
        let (order, patterns) = minimum_degree(adj);
        Ok(Symbolic::from_patterns(n, order, patterns, entries))
    }

    /// Orders `entries` (`(row, column)`, repeats allowed) of an `n × n` matrix whose rows are
    /// grouped in blocks eliminated together (a bus's angle and magnitude in a Newton-Raphson
    /// Jacobian, a bus's phases in an admittance matrix); the pattern is made symmetric. Minimum
    /// degree runs on the graph of the blocks, the smaller graph, and each row's pattern is its
    /// block's rows after it and every row of the blocks its block's pattern holds.
    pub(crate) fn new_blocked(
        n: usize,
        entries: &[(usize, usize)],
        block_of: &[usize],
    ) -> Result<Symbolic, SparseError> {
        let blocks = block_of.iter().copied().max().map_or(0, |b| b + 1);
        if block_of.len() != n {
            return Err(SparseError::OutOfRange(block_of.len(), n, n));
        }
        for &(r, c) in entries {
            if r >= n || c >= n {
                return Err(SparseError::OutOfRange(r, c, n));
            }
        }
        let adj = adjacency(
            blocks,
            entries.iter().map(|&(r, c)| (block_of[r], block_of[c])),
        )?;
        let (block_order, block_patterns) = minimum_degree(adj);
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); blocks];
        for (row, &b) in block_of.iter().enumerate() {
            members[b].push(row as u32);
        }
        let mut order = Vec::with_capacity(n);
        let mut patterns = Vec::with_capacity(n);
        for (&b, pattern) in block_order.iter().zip(&block_patterns) {
            let own = &members[b as usize];
            let others: Vec<u32> = pattern
                .iter()
                .flat_map(|&o| members[o as usize].iter().copied())
                .collect();
            for (t, &row) in own.iter().enumerate() {
                let mut p: Vec<u32> = own[t + 1..]
                    .iter()
                    .copied()
                    .chain(others.iter().copied())
                    .collect();
                p.sort_unstable();
                order.push(row);
                patterns.push(p);
            }
        }
        Ok(Symbolic::from_patterns(n, order, patterns, entries))
    }

    /// The factors' structure from an elimination order and each step's pattern (the rows after
    /// it that its column of L and row of U hold, sorted).
    fn from_patterns(
        n: usize,
        order: Vec<u32>,
        patterns: Vec<Vec<u32>>,
        entries: &[(usize, usize)],
    ) -> Symbolic {
        // Slots: the pivots first (by row), then per step `k` and per row `i` of its pattern
        // the entry (i, p) of L and then (p, i) of U. An entry (i, j) off the diagonal belongs
        // to the step of whichever of i and j goes first, at the other's place in its pattern.
        let mut position = vec![0u32; n];
        for (k, &p) in order.iter().enumerate() {
            position[p as usize] = k as u32;
        }
        let mut start = Vec::with_capacity(n + 1);
        start.push(0u32);
        for pat in &patterns {
            start.push(start[start.len() - 1] + pat.len() as u32);
        }
        let n32 = n as u32;
        let m = start[n];
        let slot = |i: u32, j: u32| -> u32 {
            if i == j {
                return i;
            }
            let (first, other, is_lower) = if position[i as usize] < position[j as usize] {
                (i, j, false)
            } else {
                (j, i, true)
            };
            let k = position[first as usize] as usize;
            let t = patterns[k]
                .binary_search(&other)
                .expect("an entry off the diagonal is in its first row's pattern")
                as u32;
            if is_lower {
                n32 + start[k] + t
            } else {
                n32 + m + start[k] + t
            }
        };
        let mut lower = Vec::with_capacity(start[n] as usize);
        let mut diag = Vec::with_capacity(n);
        let mut ustart = Vec::with_capacity(n + 1);
        let mut updates = Vec::new();
        ustart.push(0);
        for (k, &p) in order.iter().enumerate() {
            diag.push(p);
            let pat = &patterns[k];
            for &i in pat {
                lower.push(i);
            }
            for (ti, &i) in pat.iter().enumerate() {
                let l = n32 + start[k] + ti as u32;
                for (tj, &j) in pat.iter().enumerate() {
                    let u = n32 + m + start[k] + tj as u32;
                    updates.push((slot(i, j), l, u));
                }
            }
            ustart.push(updates.len() as u32);
        }
        let input_slot = entries
            .iter()
            .map(|&(r, c)| slot(r as u32, c as u32))
            .collect();
        let next = n32 + 2 * m;
        Symbolic {
            n,
            order,
            diag,
            start,
            lower,
            ustart,
            updates,
            input_slot,
            slots: next as usize,
        }
    }

    /// Entries of the factors (L and U together, with the pivots).
    #[cfg(test)]
    pub(crate) fn factor_entries(&self) -> usize {
        self.slots
    }
}

/// The symmetric pattern's graph: each row's neighbours, sorted, without itself.
fn adjacency(
    n: usize,
    entries: impl Iterator<Item = (usize, usize)>,
) -> Result<Vec<Vec<u32>>, SparseError> {
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (r, c) in entries {
        if r >= n || c >= n {
            return Err(SparseError::OutOfRange(r, c, n));
        }
        if r != c {
            adj[r].push(c as u32);
            adj[c].push(r as u32);
        }
    }
    for a in &mut adj {
        a.sort_unstable();
        a.dedup();
    }
    Ok(adj)
}

/// Minimum degree, ties to the lower index, with explicit fill: the elimination order and each
/// step's pattern (its neighbours then, sorted).
fn minimum_degree(mut adj: Vec<Vec<u32>>) -> (Vec<u32>, Vec<Vec<u32>>) {
    let n = adj.len();
    let mut heap: BinaryHeap<Reverse<(usize, u32)>> =
        (0..n).map(|i| Reverse((adj[i].len(), i as u32))).collect();
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut patterns: Vec<Vec<u32>> = Vec::with_capacity(n);
    let mut merged = Vec::new();
    while let Some(Reverse((degree, p))) = heap.pop() {
        let pu = p as usize;
        if done[pu] || degree != adj[pu].len() {
            continue;
        }
        done[pu] = true;
        let nbrs = std::mem::take(&mut adj[pu]);
        for &a in &nbrs {
            let au = a as usize;
            // adj[a] := adj[a] ∪ nbrs, less a and p.
            merged.clear();
            let (x, y) = (&adj[au], &nbrs);
            let (mut i, mut j) = (0, 0);
            while i < x.len() || j < y.len() {
                let next = match (x.get(i), y.get(j)) {
                    (Some(&u), Some(&v)) if u == v => {
                        i += 1;
                        j += 1;
                        u
                    }
                    (Some(&u), Some(&v)) if u < v => {
                        i += 1;
                        u
                    }
                    (Some(_), Some(&v)) => {
                        j += 1;
                        v
                    }
                    (Some(&u), None) => {
                        i += 1;
                        u
                    }
                    (None, Some(&v)) => {
                        j += 1;
                        v
                    }
                    (None, None) => unreachable!(),
                };
                if next != a && next != p {
                    merged.push(next);
                }
            }
            std::mem::swap(&mut adj[au], &mut merged);
            heap.push(Reverse((adj[au].len(), a)));
        }
        order.push(p);
        patterns.push(nbrs);
    }
    (order, patterns)
}

/// The numeric factors of one matrix with its [`Symbolic`] structure.
#[derive(Clone, Debug)]
pub(crate) struct Lu<T> {
    values: Vec<T>,
}

impl<T: Scalar> Lu<T> {
    pub(crate) fn new(symbolic: &Symbolic) -> Lu<T> {
        Lu {
            values: vec![T::ZERO; symbolic.slots],
        }
    }

    /// Factorises the matrix whose entries are `values`, in the order of the pattern the
    /// symbolic step was given (repeats add up).
    pub(crate) fn factorise(&mut self, s: &Symbolic, values: &[T]) -> Result<(), SparseError> {
        debug_assert_eq!(values.len(), s.input_slot.len());
        self.values.iter_mut().for_each(|v| *v = T::ZERO);
        for (&slot, &v) in s.input_slot.iter().zip(values) {
            let x = &mut self.values[slot as usize];
            *x = *x + v;
        }
        let vals = &mut self.values;
        let before: Vec<f64> = vals[..s.n].iter().map(|d| d.magnitude_sqr()).collect();
        for k in 0..s.n {
            let d = vals[s.diag[k] as usize];
            let m = d.magnitude_sqr();
            let floor = before[s.diag[k] as usize] * PIVOT_MIN_RATIO * PIVOT_MIN_RATIO;
            if m == 0.0 || m <= floor || !m.is_finite() {
                return Err(SparseError::ZeroPivot(s.order[k] as usize));
            }
            for t in s.start[k] as usize..s.start[k + 1] as usize {
                let x = vals[s.n + t];
                vals[s.n + t] = x / d;
            }
            for &(t, l, u) in &s.updates[s.ustart[k] as usize..s.ustart[k + 1] as usize] {
                let x = vals[t as usize] - vals[l as usize] * vals[u as usize];
                vals[t as usize] = x;
            }
        }
        Ok(())
    }

    /// Solves `A x = b` in place (`b` in, `x` out), in the matrix's own row order.
    pub(crate) fn solve(&self, s: &Symbolic, b: &mut [T]) {
        let n = s.n;
        let m = s.lower.len();
        let (diag, rest) = self.values.split_at(n);
        let (l, u) = rest.split_at(m);
        for k in 0..n {
            let y = b[s.order[k] as usize];
            if y == T::ZERO {
                continue;
            }
            let range = s.start[k] as usize..s.start[k + 1] as usize;
            for (&i, &lv) in s.lower[range.clone()].iter().zip(&l[range]) {
                let x = b[i as usize] - lv * y;
                b[i as usize] = x;
            }
        }
        for k in (0..n).rev() {
            let p = s.order[k] as usize;
            let range = s.start[k] as usize..s.start[k + 1] as usize;
            let mut x = b[p];
            for (&j, &uv) in s.lower[range.clone()].iter().zip(&u[range]) {
                x = x - uv * b[j as usize];
            }
            b[p] = x / diag[s.diag[k] as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::c64;

    #[allow(clippy::needless_range_loop)]
    fn dense_solve(n: usize, entries: &[(usize, usize)], values: &[f64], b: &[f64]) -> Vec<f64> {
        let mut a = vec![vec![0.0; n]; n];
        for (&(r, c), &v) in entries.iter().zip(values) {
            a[r][c] += v;
        }
        let mut x = b.to_vec();
        for k in 0..n {
            for i in k + 1..n {
                let f = a[i][k] / a[k][k];
                for j in k..n {
                    a[i][j] -= f * a[k][j];
                }
                x[i] -= f * x[k];
            }
        }
        for k in (0..n).rev() {
            let s: f64 = (k + 1..n).map(|j| a[k][j] * x[j]).sum();
            x[k] = (x[k] - s) / a[k][k];
        }
        x
    }

    #[test]
    fn solves_a_meshed_unsymmetric_matrix_as_dense_elimination_does() {
        // A ring of 12 with chords: fill-in happens; values unsymmetric, diagonally dominant.
        let n = 12;
        let mut entries = Vec::new();
        let mut values = Vec::new();
        for i in 0..n {
            for j in [(i + 1) % n, (i + 5) % n] {
                entries.push((i, j));
                values.push(-1.0 - 0.1 * i as f64);
                entries.push((j, i));
                values.push(-0.7 - 0.05 * j as f64);
            }
            entries.push((i, i));
            values.push(8.0 + i as f64);
        }
        // A repeated entry adds up.
        entries.push((3, 3));
        values.push(1.5);
        let s = Symbolic::new(n, &entries).unwrap();
        let mut lu = Lu::new(&s);
        lu.factorise(&s, &values).unwrap();
        let b: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
        let mut x = b.clone();
        lu.solve(&s, &mut x);
        let want = dense_solve(n, &entries, &values, &b);
        for (a, b) in x.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn a_tree_fills_nothing_and_complex_values_solve() {
        // A path graph: minimum degree eliminates from the ends, no fill.
        let n = 50;
        let mut entries = Vec::new();
        let mut values = Vec::new();
        for i in 0..n - 1 {
            entries.extend([(i, i + 1), (i + 1, i)]);
            values.extend([c64::new(-1.0, 3.0), c64::new(-1.0, 3.0)]);
        }
        for i in 0..n {
            entries.push((i, i));
            values.push(c64::new(2.5, -6.0));
        }
        let s = Symbolic::new(n, &entries).unwrap();
        assert_eq!(s.factor_entries(), n + 2 * (n - 1), "no fill on a path");
        let mut lu = Lu::new(&s);
        lu.factorise(&s, &values).unwrap();
        let b: Vec<c64> = (0..n).map(|i| c64::new(i as f64, 1.0)).collect();
        let mut x = b.clone();
        lu.solve(&s, &mut x);
        // Residual: A x - b.
        let mut r = b.iter().map(|v| -*v).collect::<Vec<_>>();
        for (&(i, j), v) in entries.iter().zip(&values) {
            r[i] += v * x[j];
        }
        assert!(r.iter().all(|v| v.norm() < 1e-12));
    }

    #[test]
    fn blocks_eliminated_together_solve_as_rows_one_by_one() {
        // A ring of 6 buses, two rows each (coupled within a bus and to the neighbours').
        let buses = 6;
        let n = 2 * buses;
        let mut entries = Vec::new();
        let mut values = Vec::new();
        for b in 0..buses {
            let nb = (b + 1) % buses;
            for (r, c, v) in [
                (2 * b, 2 * b, 9.0 + b as f64),
                (2 * b + 1, 2 * b + 1, 7.0),
                (2 * b, 2 * b + 1, 0.5),
                (2 * b + 1, 2 * b, -0.3),
                (2 * b, 2 * nb, -1.0),
                (2 * nb, 2 * b, -1.2),
                (2 * b + 1, 2 * nb + 1, -0.8),
                (2 * nb + 1, 2 * b + 1, -0.9),
                (2 * b, 2 * nb + 1, 0.2),
            ] {
                entries.push((r, c));
                values.push(v);
            }
        }
        let block_of: Vec<usize> = (0..n).map(|r| r / 2).collect();
        let b: Vec<f64> = (0..n).map(|i| (i as f64).cos()).collect();
        let solve = |s: &Symbolic| {
            let mut lu = Lu::new(s);
            lu.factorise(s, &values).unwrap();
            let mut x = b.clone();
            lu.solve(s, &mut x);
            x
        };
        let rows = solve(&Symbolic::new(n, &entries).unwrap());
        let blocked = solve(&Symbolic::new_blocked(n, &entries, &block_of).unwrap());
        let want = dense_solve(n, &entries, &values, &b);
        for ((x, y), w) in rows.iter().zip(&blocked).zip(&want) {
            assert!(
                (x - w).abs() < 1e-12 && (y - w).abs() < 1e-12,
                "{x} {y} {w}"
            );
        }
    }

    #[test]
    fn a_vanishing_pivot_is_reported_and_bad_entries_refused() {
        let s = Symbolic::new(2, &[(0, 0), (0, 1), (1, 0), (1, 1)]).unwrap();
        let mut lu = Lu::<f64>::new(&s);
        assert!(matches!(
            lu.factorise(&s, &[1.0, 1.0, 1.0, 1.0]),
            Err(SparseError::ZeroPivot(_))
        ));
        assert_eq!(
            Symbolic::new(2, &[(0, 2)]).unwrap_err(),
            SparseError::OutOfRange(0, 2, 2)
        );
    }
}
