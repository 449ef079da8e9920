//! A linear program held as data: solved by the crate's dual simplex ([`crate::simplex`]) or
//! microlp (and again from its optimum with a variable fixed), and written as free MPS so
//! another solver (HiGHS, in the interop test) can solve the very same problem.

use crate::simplex::{Simplex, Stop};

/// Why a program has no optimum.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolutionError {
    #[error("the program has no feasible point")]
    Infeasible,
    #[error("the program's objective has no lower bound")]
    Unbounded,
    #[error("{0}")]
    Other(&'static str),
    #[error("the solver failed: {0}")]
    Str(String),
}

impl From<microlp::Error> for ResolutionError {
    fn from(e: microlp::Error) -> Self {
        match e {
            microlp::Error::Infeasible => ResolutionError::Infeasible,
            microlp::Error::Unbounded => ResolutionError::Unbounded,
            other => ResolutionError::Str(other.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sense {
    Le,
    Ge,
    Eq,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub coeffs: Vec<(usize, f64)>,
    pub sense: Sense,
    pub rhs: f64,
}

/// A solved program: its optimum `x`, and the solver's state to solve it again with a
/// variable fixed.
pub struct Solved {
    pub x: Vec<f64>,
    state: State,
}

enum State {
    /// Solved by [`crate::simplex`]: its optimal basis.
    Dual(Box<Simplex>),
    /// Solved by microlp.
    Microlp {
        solution: microlp::Solution,
        /// Each column's variable in the solver; `None` for a column fixed by its bounds,
        /// which the solver never saw (its value is in `x`).
        vars: Vec<Option<microlp::Variable>>,
    },
}

impl Solved {
    fn from_microlp(
        solution: microlp::Solution,
        vars: Vec<Option<microlp::Variable>>,
        fixed: &[f64],
    ) -> Solved {
        Solved {
            x: vars
                .iter()
                .zip(fixed)
                .map(|(v, f)| v.map_or(*f, |v| solution.var_value(v)))
                .collect(),
            state: State::Microlp { solution, vars },
        }
    }

    /// The optimal basis, where the dual simplex found it: the basic column of each row's
    /// position (`columns..` for the rows' logicals) and the program's structural columns.
    pub fn basis(&self) -> Option<(&[usize], usize)> {
        match &self.state {
            State::Dual(simplex) => Some((simplex.head(), simplex.columns())),
            State::Microlp { .. } => None,
        }
    }

    /// Pivots the dual simplex took to this optimum (none counted for microlp's).
    pub fn pivots(&self) -> Option<usize> {
        match &self.state {
            State::Dual(simplex) => Some(simplex.pivots),
            State::Microlp { .. } => None,
        }
    }

    /// The program `lp` (the one solved) solved again with variable `var` fixed at `value`,
    /// from this optimum.
    pub fn with_fixed(&self, lp: &Lp, var: usize, value: f64) -> Result<Solved, ResolutionError> {
        match &self.state {
            State::Dual(simplex) => {
                let mut simplex = simplex.clone();
                simplex.fix(var, value);
                match simplex.solve() {
                    Stop::Optimal => Ok(Solved {
                        x: simplex.x().to_vec(),
                        state: State::Dual(simplex),
                    }),
                    Stop::Infeasible => Err(ResolutionError::Infeasible),
                    Stop::Failed(_) => {
                        let mut fixed = lp.clone();
                        fixed.lower[var] = value;
                        fixed.upper[var] = value;
                        fixed.solve_microlp()
                    }
                }
            }
            State::Microlp { solution, vars } => {
                let Some(v) = vars[var] else {
                    // Fixed by its bounds already.
                    return if (value - self.x[var]).abs() <= 1e-12 {
                        Ok(Solved {
                            x: self.x.clone(),
                            state: State::Microlp {
                                solution: solution.clone(),
                                vars: vars.clone(),
                            },
                        })
                    } else {
                        Err(ResolutionError::Infeasible)
                    };
                };
                let solution = solution
                    .clone()
                    .fix_var(v, value)?
                    .into_solution()
                    .map_err(|_| {
                        ResolutionError::Other("no feasible solution within the limits")
                    })?;
                Ok(Solved::from_microlp(solution, vars.clone(), &self.x))
            }
        }
    }
}

/// Minimise `objective · x + constant` subject to rows and bounds.
#[derive(Clone, Debug, Default)]
pub struct Lp {
    pub names: Vec<String>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub integer: Vec<bool>,
    pub objective: Vec<f64>,
    pub constant: f64,
    pub rows: Vec<Row>,
    /// A basis to start from: the column for each row (its logical where `None`).
    pub crash: Option<Vec<Option<usize>>>,
    /// A basis to try before `crash`, likely nearer the optimum (an earlier optimum of a
    /// program like this one), repaired where singular; `crash` where even that fails.
    pub warm: Option<Vec<Option<usize>>>,
}

impl Lp {
    pub fn var(&mut self, name: String, lower: f64, upper: f64) -> usize {
        self.names.push(name);
        self.lower.push(lower);
        self.upper.push(upper);
        self.integer.push(false);
        self.objective.push(0.0);
        self.names.len() - 1
    }

    pub fn binary(&mut self, name: String) -> usize {
        let v = self.var(name, 0.0, 1.0);
        self.integer[v] = true;
        v
    }

    pub fn row(&mut self, coeffs: Vec<(usize, f64)>, sense: Sense, rhs: f64) {
        self.rows.push(Row { coeffs, sense, rhs });
    }

    pub fn value(&self, x: &[f64]) -> f64 {
        self.constant
            + self
                .objective
                .iter()
                .zip(x)
                .map(|(c, v)| c * v)
                .sum::<f64>()
    }

    /// Solves with microlp.
    pub fn solve(&self) -> Result<Vec<f64>, ResolutionError> {
        Ok(self.solve_warm()?.x)
    }

    /// Solves and keeps the solver's optimal state, to solve again with a variable fixed from
    /// there ([`Solved::with_fixed`]): a few dual simplex pivots instead of a solve from
    /// scratch. A continuous program goes to [`crate::simplex`] (from the basis in `crash`
    /// where one is given), and to microlp where that reports anything but a checked optimum;
    /// a program with integer columns goes to microlp.
    pub fn solve_warm(&self) -> Result<Solved, ResolutionError> {
        if !self.integer.iter().any(|i| *i) {
            let bases: Vec<&[Option<usize>]> = [self.warm.as_deref(), self.crash.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            if let Ok(mut simplex) = Simplex::from_bases(self, &bases) {
                if simplex.solve() == Stop::Optimal {
                    return Ok(Solved {
                        x: simplex.x().to_vec(),
                        state: State::Dual(Box::new(simplex)),
                    });
                }
            }
        }
        self.solve_microlp()
    }

    /// Solves with microlp. Columns fixed by their bounds (a device absent or outside its
    /// window) are constants to the solver, and rows left empty are checked, not sent.
    pub fn solve_microlp(&self) -> Result<Solved, ResolutionError> {
        let mut problem = microlp::Problem::new(microlp::OptimizationDirection::Minimize);
        let mut vars = Vec::with_capacity(self.names.len());
        // The value of each column fixed by its bounds (the others' are the solver's).
        let mut fixed = vec![0.0; self.names.len()];
        for (i, fixed_value) in fixed.iter_mut().enumerate() {
            vars.push(if self.integer[i] {
                let (lo, hi) = (self.lower[i].ceil(), self.upper[i].floor());
                if !(lo <= hi && lo >= f64::from(i32::MIN) && hi <= f64::from(i32::MAX)) {
                    return Err(ResolutionError::Infeasible);
                }
                Some(problem.add_integer_var(self.objective[i], (lo as i32, hi as i32)))
            } else if self.lower[i] == self.upper[i] {
                *fixed_value = self.lower[i];
                None
            } else {
                Some(problem.add_var(self.objective[i], (self.lower[i], self.upper[i])))
            });
        }
        for r in &self.rows {
            let mut e = microlp::LinearExpr::empty();
            let mut rhs = r.rhs;
            let mut terms = 0;
            for (i, c) in &r.coeffs {
                match vars[*i] {
                    Some(v) => {
                        e.add(v, *c);
                        terms += 1;
                    }
                    None => rhs -= c * fixed[*i],
                }
            }
            if terms == 0 {
                let tol = 1e-9 * (1.0 + r.rhs.abs());
                let holds = match r.sense {
                    Sense::Le => rhs >= -tol,
                    Sense::Ge => rhs <= tol,
                    Sense::Eq => rhs.abs() <= tol,
                };
                if !holds {
                    return Err(ResolutionError::Infeasible);
                }
                continue;
            }
            let op = match r.sense {
                Sense::Le => microlp::ComparisonOp::Le,
                Sense::Ge => microlp::ComparisonOp::Ge,
                Sense::Eq => microlp::ComparisonOp::Eq,
            };
            problem.add_constraint(e, op, rhs);
        }
        let mut opts = microlp::SolveOptions::default();
        opts.mip_gap = 0.0;
        let solution = problem
            .solve_with(opts)?
            .into_solution()
            .map_err(|_| ResolutionError::Other("no feasible solution within the limits"))?;
        Ok(Solved::from_microlp(solution, vars, &fixed))
    }

    /// The problem in free MPS (objective constant as the objective row's RHS, negated, as MPS
    /// defines it; integer columns between MARKER lines).
    pub fn to_mps(&self, name: &str) -> String {
        use std::fmt::Write;
        let mut s = format!("NAME {name}\nROWS\n N obj\n");
        for (k, r) in self.rows.iter().enumerate() {
            let t = match r.sense {
                Sense::Le => "L",
                Sense::Ge => "G",
                Sense::Eq => "E",
            };
            let _ = writeln!(s, " {t} r{k}");
        }
        let mut columns: Vec<Vec<(String, f64)>> = vec![Vec::new(); self.names.len()];
        for (j, c) in self.objective.iter().enumerate() {
            if *c != 0.0 {
                columns[j].push(("obj".into(), *c));
            }
        }
        for (k, r) in self.rows.iter().enumerate() {
            for (j, c) in &r.coeffs {
                columns[*j].push((format!("r{k}"), *c));
            }
        }
        s.push_str("COLUMNS\n");
        let mut in_int = false;
        for (j, col) in columns.iter().enumerate() {
            if self.integer[j] != in_int {
                let _ = writeln!(
                    s,
                    " M{j} 'MARKER' '{}'",
                    if self.integer[j] { "INTORG" } else { "INTEND" }
                );
                in_int = self.integer[j];
            }
            if col.is_empty() {
                let _ = writeln!(s, " {} obj 0", self.names[j]);
            }
            for (row, c) in col {
                let _ = writeln!(s, " {} {row} {c:e}", self.names[j]);
            }
        }
        if in_int {
            let _ = writeln!(s, " Mend 'MARKER' 'INTEND'");
        }
        s.push_str("RHS\n");
        if self.constant != 0.0 {
            let _ = writeln!(s, " rhs obj {:e}", -self.constant);
        }
        for (k, r) in self.rows.iter().enumerate() {
            if r.rhs != 0.0 {
                let _ = writeln!(s, " rhs r{k} {:e}", r.rhs);
            }
        }
        s.push_str("BOUNDS\n");
        for j in 0..self.names.len() {
            let n = &self.names[j];
            if self.lower[j] == self.upper[j] {
                let _ = writeln!(s, " FX bnd {n} {:e}", self.lower[j]);
            } else {
                let _ = writeln!(s, " LO bnd {n} {:e}", self.lower[j]);
                let _ = writeln!(s, " UP bnd {n} {:e}", self.upper[j]);
            }
        }
        s.push_str("ENDATA\n");
        s
    }
}
