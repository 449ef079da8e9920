//! MATPOWER case files (`.m`, format version 2): the common exchange format of power-system tools.
//!
//! A case is a MATLAB function assigning `mpc.version`, `mpc.baseMVA` and the matrices `mpc.bus`,
//! `mpc.gen` and `mpc.branch` (rows end with `;`, columns separated by white space or commas, `%`
//! starts a comment). Other fields (`gencost`, `bus_name`, ...) are skipped. Columns, per MATPOWER's
//! manual: bus `BUS_I TYPE PD QD GS BS AREA VM VA BASE_KV ZONE VMAX VMIN`; gen `GEN_BUS PG QG QMAX
//! QMIN VG MBASE GEN_STATUS ...`; branch `F_BUS T_BUS BR_R BR_X BR_B RATE_A RATE_B RATE_C TAP SHIFT
//! BR_STATUS ...`. Errors name the line.

use std::collections::HashMap;

use crate::network::{Branch, Bus, BusKind, Generator, Network};

/// Most buses a case may have (bounds memory for untrusted files).
pub const MAX_BUSES: usize = 200_000;
/// Most rows in any one matrix.
pub const MAX_ROWS: usize = 1_000_000;

/// Why a case file cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaseError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("the case does not define mpc.{0}")]
    Missing(&'static str),
    #[error("MATPOWER case version {0:?} is not supported (only version 2)")]
    Version(String),
    #[error("{matrix} row {row} (line {line}) has {got} columns, needs at least {need}")]
    Columns {
        matrix: &'static str,
        row: usize,
        line: usize,
        got: usize,
        need: usize,
    },
    #[error("{matrix} row {row} (line {line}): {message}")]
    Value {
        matrix: &'static str,
        row: usize,
        line: usize,
        message: String,
    },
    #[error("the case has {0} buses, more than the limit of {MAX_BUSES}")]
    TooLarge(usize),
}

/// One matrix: its rows of numbers with the line each row started on.
type Matrix = Vec<(usize, Vec<f64>)>;

/// Parses a MATPOWER case file's text into a [`Network`].
pub fn parse_case(text: &str) -> Result<Network, CaseError> {
    let mut name = String::new();
    let mut version = None;
    let mut base_mva = None;
    let mut matrices: HashMap<String, Matrix> = HashMap::new();
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, strip_comment(l)));
    while let Some((n, line)) = lines.next() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("function") {
            name = rest
                .split('=')
                .next_back()
                .unwrap_or("")
                .trim()
                .trim_end_matches(';')
                .to_string();
            continue;
        }
        let Some((lhs, rhs)) = line.split_once('=') else {
            continue;
        };
        let field = lhs
            .trim()
            .strip_prefix("mpc.")
            .unwrap_or(lhs.trim())
            .to_string();
        let rhs = rhs.trim();
        if rhs.starts_with('[') {
            let m = read_matrix(rhs, n, &mut lines)?;
            matrices.insert(field, m);
        } else if rhs.starts_with('{') {
            skip_cell(rhs, &mut lines);
        } else {
            let value = rhs
                .trim_end_matches(';')
                .trim()
                .trim_matches('\'')
                .to_string();
            match field.as_str() {
                "version" => version = Some(value),
                "baseMVA" => {
                    base_mva = Some(value.parse::<f64>().map_err(|_| CaseError::Syntax {
                        line: n,
                        message: format!("baseMVA {value:?} is not a number"),
                    })?)
                }
                _ => {}
            }
        }
    }
    match version.as_deref() {
        Some("2") => {}
        Some(v) => return Err(CaseError::Version(v.to_string())),
        None => return Err(CaseError::Missing("version")),
    }
    let base_mva = base_mva.ok_or(CaseError::Missing("baseMVA"))?;
    if !(base_mva.is_finite() && base_mva > 0.0) {
        return Err(CaseError::Syntax {
            line: 0,
            message: format!("baseMVA must be positive, not {base_mva}"),
        });
    }
    let bus_rows = matrices.remove("bus").ok_or(CaseError::Missing("bus"))?;
    let gen_rows = matrices.remove("gen").ok_or(CaseError::Missing("gen"))?;
    let branch_rows = matrices
        .remove("branch")
        .ok_or(CaseError::Missing("branch"))?;
    if bus_rows.len() > MAX_BUSES {
        return Err(CaseError::TooLarge(bus_rows.len()));
    }

    let mut buses = Vec::with_capacity(bus_rows.len());
    let mut index: HashMap<u32, usize> = HashMap::with_capacity(bus_rows.len());
    for (row, (line, v)) in bus_rows.iter().enumerate() {
        let bad = |message: String| CaseError::Value {
            matrix: "bus",
            row: row + 1,
            line: *line,
            message,
        };
        need("bus", row, *line, v, 13)?;
        let number = as_id(v[0])
            .ok_or_else(|| bad(format!("bus number {} is not a positive integer", v[0])))?;
        let kind = match v[1] as i64 {
            1 => BusKind::Pq,
            2 => BusKind::Pv,
            3 => BusKind::Slack,
            4 => BusKind::Isolated,
            t => {
                return Err(bad(format!(
                    "bus type {t} is not 1 (PQ), 2 (PV), 3 (slack) or 4 (isolated)"
                )))
            }
        };
        if index.insert(number, buses.len()).is_some() {
            return Err(bad(format!("bus number {number} appears twice")));
        }
        buses.push(Bus {
            number,
            kind,
            load_mw: v[2],
            load_mvar: v[3],
            shunt_mw: v[4],
            shunt_mvar: v[5],
            vm_pu: v[7],
            va_deg: v[8],
            base_kv: v[9],
            vmax_pu: v[11],
            vmin_pu: v[12],
        });
    }
    let mut generators = Vec::with_capacity(gen_rows.len());
    for (row, (line, v)) in gen_rows.iter().enumerate() {
        need("gen", row, *line, v, 8)?;
        let bus = lookup(&index, v[0]).ok_or_else(|| CaseError::Value {
            matrix: "gen",
            row: row + 1,
            line: *line,
            message: format!("bus {} does not exist", v[0]),
        })?;
        generators.push(Generator {
            bus,
            p_mw: v[1],
            q_mvar: v[2],
            qmax_mvar: v[3],
            qmin_mvar: v[4],
            vset_pu: v[5],
            in_service: v[7] > 0.0,
        });
    }
    let mut branches = Vec::with_capacity(branch_rows.len());
    for (row, (line, v)) in branch_rows.iter().enumerate() {
        need("branch", row, *line, v, 11)?;
        let bad = |message: String| CaseError::Value {
            matrix: "branch",
            row: row + 1,
            line: *line,
            message,
        };
        let from =
            lookup(&index, v[0]).ok_or_else(|| bad(format!("from bus {} does not exist", v[0])))?;
        let to =
            lookup(&index, v[1]).ok_or_else(|| bad(format!("to bus {} does not exist", v[1])))?;
        let in_service = v[10] > 0.0;
        if in_service && v[2] == 0.0 && v[3] == 0.0 {
            return Err(bad("r and x are both zero (a zero-impedance branch)".into()));
        }
        branches.push(Branch {
            from,
            to,
            r_pu: v[2],
            x_pu: v[3],
            b_pu: v[4],
            rate_a_mva: v[5],
            tap: if v[8] == 0.0 { 1.0 } else { v[8] },
            shift_deg: v[9],
            in_service,
        });
    }
    Ok(Network {
        name,
        base_mva,
        buses,
        generators,
        branches,
    })
}

/// Writes a network as a MATPOWER version 2 case (what [`parse_case`] reads back to the same
/// network, numbers printed exactly): to hand a generated feeder to another tool.
pub fn write_case(net: &Network) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let name = if net.name.is_empty() {
        "mpc"
    } else {
        &net.name
    };
    let _ = writeln!(
        out,
        "function mpc = {name}\nmpc.version = '2';\nmpc.baseMVA = {};",
        net.base_mva
    );
    out.push_str("%% bus_i type Pd Qd Gs Bs area Vm Va baseKV zone Vmax Vmin\nmpc.bus = [\n");
    for b in &net.buses {
        let kind = match b.kind {
            BusKind::Pq => 1,
            BusKind::Pv => 2,
            BusKind::Slack => 3,
            BusKind::Isolated => 4,
        };
        let _ = writeln!(
            out,
            "\t{} {kind} {} {} {} {} 1 {} {} {} 1 {} {};",
            b.number,
            b.load_mw,
            b.load_mvar,
            b.shunt_mw,
            b.shunt_mvar,
            b.vm_pu,
            b.va_deg,
            b.base_kv,
            b.vmax_pu,
            b.vmin_pu
        );
    }
    out.push_str("];\n%% bus Pg Qg Qmax Qmin Vg mBase status Pmax Pmin\nmpc.gen = [\n");
    for g in &net.generators {
        let _ = writeln!(
            out,
            "\t{} {} {} {} {} {} {} {} 0 0;",
            net.buses[g.bus].number,
            g.p_mw,
            g.q_mvar,
            g.qmax_mvar,
            g.qmin_mvar,
            g.vset_pu,
            net.base_mva,
            u8::from(g.in_service)
        );
    }
    out.push_str("];\n%% fbus tbus r x b rateA rateB rateC ratio angle status angmin angmax\nmpc.branch = [\n");
    for br in &net.branches {
        let _ = writeln!(
            out,
            "\t{} {} {} {} {} {} 0 0 {} {} {} -360 360;",
            net.buses[br.from].number,
            net.buses[br.to].number,
            br.r_pu,
            br.x_pu,
            br.b_pu,
            br.rate_a_mva,
            br.tap,
            br.shift_deg,
            u8::from(br.in_service)
        );
    }
    out.push_str("];\n");
    out
}

fn need(
    matrix: &'static str,
    row: usize,
    line: usize,
    v: &[f64],
    n: usize,
) -> Result<(), CaseError> {
    if v.len() < n {
        return Err(CaseError::Columns {
            matrix,
            row: row + 1,
            line,
            got: v.len(),
            need: n,
        });
    }
    Ok(())
}

fn as_id(x: f64) -> Option<u32> {
    (x.fract() == 0.0 && x >= 1.0 && x <= f64::from(u32::MAX)).then_some(x as u32)
}

fn lookup(index: &HashMap<u32, usize>, x: f64) -> Option<usize> {
    as_id(x).and_then(|n| index.get(&n).copied())
}

fn strip_comment(line: &str) -> &str {
    match line.find('%') {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Reads a matrix starting at `first` (the text after `=` on line `start`) up to the closing `]`.
fn read_matrix<'a>(
    first: &str,
    start: usize,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Result<Matrix, CaseError> {
    let mut rows: Matrix = Vec::new();
    let mut current: Vec<f64> = Vec::new();
    let mut current_line = start;
    let mut chunk = first.trim_start_matches('[').to_string();
    let mut line_no = start;
    loop {
        let (body, closed) = match chunk.find(']') {
            Some(i) => (chunk[..i].to_string(), true),
            None => (chunk.clone(), false),
        };
        for (k, part) in body.split(';').enumerate() {
            if k > 0 && !current.is_empty() {
                rows.push((current_line, std::mem::take(&mut current)));
            }
            for tok in part
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
            {
                if current.is_empty() {
                    current_line = line_no;
                }
                let x: f64 = tok.parse().map_err(|_| CaseError::Syntax {
                    line: line_no,
                    message: format!("{tok:?} is not a number"),
                })?;
                current.push(x);
            }
        }
        // A row also ends at the end of a line (MATPOWER writes one row per line).
        if !current.is_empty() {
            rows.push((current_line, std::mem::take(&mut current)));
        }
        if rows.len() > MAX_ROWS {
            return Err(CaseError::Syntax {
                line: line_no,
                message: format!("more than {MAX_ROWS} rows in one matrix"),
            });
        }
        if closed {
            return Ok(rows);
        }
        match lines.next() {
            Some((n, l)) => {
                line_no = n;
                chunk = l.to_string();
            }
            None => {
                return Err(CaseError::Syntax {
                    line: start,
                    message: "matrix is not closed with ']'".into(),
                })
            }
        }
    }
}

/// Skips a cell array (`{ ... };`).
fn skip_cell<'a>(first: &str, lines: &mut impl Iterator<Item = (usize, &'a str)>) {
    if first.contains('}') {
        return;
    }
    for (_, l) in lines.by_ref() {
        if l.contains('}') {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_case_reads_back_to_the_same_network() {
        let net = crate::generated_radial_feeder(300, 5);
        assert_eq!(parse_case(&write_case(&net)).unwrap(), net);
        let tiny = parse_case(TINY).unwrap();
        assert_eq!(parse_case(&write_case(&tiny)).unwrap(), tiny);
    }

    const TINY: &str = "function mpc = tiny
% a comment
mpc.version = '2';
mpc.baseMVA = 100;
mpc.bus = [
\t1\t3\t0\t0\t0\t0\t1\t1.02\t0\t12.66\t1\t1.1\t0.9;
\t2\t1\t1.5\t0.5\t0\t0\t1\t1\t0\t12.66\t1\t1.1\t0.9; % load
];
mpc.gen = [
\t1\t0\t0\t10\t-10\t1.02\t100\t1\t10\t0;
];
mpc.branch = [
\t1\t2\t0.01\t0.02\t0\t5\t5\t5\t0\t0\t1\t-360\t360;
];
mpc.bus_name = {
\t'a';
\t'b';
};
";

    #[test]
    fn reads_a_small_case() {
        let n = parse_case(TINY).unwrap();
        assert_eq!(n.name, "tiny");
        assert_eq!(n.base_mva, 100.0);
        assert_eq!(n.buses.len(), 2);
        assert_eq!(n.buses[0].kind, BusKind::Slack);
        assert_eq!(n.buses[1].load_mw, 1.5);
        assert_eq!(n.generators[0].vset_pu, 1.02);
        assert_eq!(n.branches[0].tap, 1.0, "MATPOWER's tap 0 means a line");
        assert_eq!(n.branches[0].to, 1);
        assert!(n.is_radial());
    }

    #[test]
    fn broken_cases_name_the_line() {
        let e = parse_case(&TINY.replace("1.5\t0.5", "1.5\tx")).unwrap_err();
        assert!(matches!(e, CaseError::Syntax { line: 7, .. }), "{e}");
        let e = parse_case(&TINY.replace("mpc.version = '2';", "mpc.version = '1';")).unwrap_err();
        assert_eq!(e, CaseError::Version("1".into()));
        let e = parse_case(&TINY.replace("\t1\t2\t0.01", "\t1\t7\t0.01")).unwrap_err();
        assert!(e.to_string().contains("to bus 7 does not exist"), "{e}");
        let e = parse_case(&TINY.replace("\t2\t1\t1.5", "\t1\t1\t1.5")).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        let e = parse_case(&TINY.replace("0.01\t0.02", "0\t0")).unwrap_err();
        assert!(e.to_string().contains("zero-impedance"), "{e}");
        let e = parse_case(&TINY.replace("\t1\t3\t0\t0", "\t1\t9\t0\t0")).unwrap_err();
        assert!(e.to_string().contains("bus type 9"), "{e}");
        let e = parse_case(&TINY.replace("];\nmpc.gen", "\nmpc.gen")).unwrap_err();
        assert!(matches!(e, CaseError::Syntax { .. }), "{e}");
        assert_eq!(
            parse_case("mpc.version = '2';\nmpc.baseMVA = 1;").unwrap_err(),
            CaseError::Missing("bus")
        );
    }
}
