//! A linear program held as data: solved by microlp through good_lp, and written as free MPS so
//! another solver (HiGHS, in the interop test) can solve the very same problem.

use good_lp::{
    microlp, variable, Expression, ProblemVariables, ResolutionError, Solution, SolverModel,
};

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

    /// Solves with microlp (through good_lp).
    pub fn solve(&self) -> Result<Vec<f64>, ResolutionError> {
        let mut vars = ProblemVariables::new();
        let xs: Vec<_> = (0..self.names.len())
            .map(|i| {
                let v = variable().min(self.lower[i]).max(self.upper[i]);
                vars.add(if self.integer[i] { v.integer() } else { v })
            })
            .collect();
        let objective: Expression = self
            .objective
            .iter()
            .zip(&xs)
            .filter(|(c, _)| **c != 0.0)
            .map(|(c, x)| *c * *x)
            .sum::<Expression>()
            + self.constant;
        let mut model = vars.minimise(objective).using(microlp);
        for r in &self.rows {
            let lhs: Expression = r.coeffs.iter().map(|(i, c)| *c * xs[*i]).sum();
            model = model.with(match r.sense {
                Sense::Le => lhs.leq(r.rhs),
                Sense::Ge => lhs.geq(r.rhs),
                Sense::Eq => lhs.eq(r.rhs),
            });
        }
        let sol = model.solve()?;
        Ok(xs.iter().map(|x| sol.value(*x)).collect())
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
