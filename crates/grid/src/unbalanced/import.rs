//! An OpenDSS script's objects into a [`Circuit`]: every property applied in the order written
//! with OpenDSS's defaults and side effects (a winding's properties go to the active winding, a
//! switch resets a line's impedance, a line code's units convert the line's length), so the
//! circuit is the one OpenDSS would build. A property, option or value this import does not
//! model is an error naming the file and line; `EnergyMeter` and `Monitor` only name what is
//! measured and are left out.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use faer::c64;

use super::{
    Bus, CapControl, CapControlKind, Capacitor, Circuit, Connection, Line, Load, LoadModel,
    LoadShape, Monitored, PhaseChoice, PtPhase, Regulator, Source, Terminal, Transformer, Winding,
};
use crate::dss::{self, At, DssError, Object, Property, Script};

/// Most points of one load shape.
pub const MAX_SHAPE_POINTS: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Script(#[from] DssError),
    #[error("{at}: {reason}")]
    Invalid { at: At, reason: String },
    #[error("{at}: cannot read {path}: {error}")]
    Read {
        at: At,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the script defines no circuit (`New Circuit.NAME`)")]
    NoCircuit,
    #[error("{0}")]
    Solve(#[from] super::SolveError),
}

fn invalid(at: &At, reason: impl Into<String>) -> ImportError {
    ImportError::Invalid {
        at: at.clone(),
        reason: reason.into(),
    }
}

fn num(p: &Property) -> Result<f64, ImportError> {
    dss::number(&p.value).map_err(|r| invalid(&p.at, r))
}

fn positive(p: &Property, what: &str) -> Result<f64, ImportError> {
    let x = num(p)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(invalid(&p.at, format!("{what} must be above 0, not {x}")))
    }
}

fn count(p: &Property, max: usize) -> Result<usize, ImportError> {
    let x = num(p)?;
    if x.fract() == 0.0 && x >= 1.0 && x <= max as f64 {
        Ok(x as usize)
    } else {
        Err(invalid(
            &p.at,
            format!("`{}` must be a whole number from 1 to {max}", p.value),
        ))
    }
}

fn flag(p: &Property) -> Result<bool, ImportError> {
    match p.value.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "t" => Ok(true),
        "n" | "no" | "false" | "f" => Ok(false),
        v => Err(invalid(&p.at, format!("`{v}` is not yes or no"))),
    }
}

fn connection(p: &Property) -> Result<Connection, ImportError> {
    match p.value.trim().to_ascii_lowercase().as_str() {
        "wye" | "y" | "ln" => Ok(Connection::Wye),
        "delta" | "d" | "ll" => Ok(Connection::Delta),
        v => Err(invalid(
            &p.at,
            format!("`{v}` is not a connection (wye, delta)"),
        )),
    }
}

fn numbers(p: &Property) -> Result<Vec<f64>, ImportError> {
    dss::array(&p.value)
        .iter()
        .map(|x| dss::number(x).map_err(|r| invalid(&p.at, r)))
        .collect()
}

/// Length units and their size in metres (OpenDSS's `units`; `none` converts nothing).
fn units(p: &Property) -> Result<Option<f64>, ImportError> {
    let v = p.value.trim().to_ascii_lowercase();
    Ok(match v.as_str() {
        "none" | "no" => None,
        "mi" | "mile" | "miles" => Some(1609.344),
        "kft" => Some(304.8),
        "km" => Some(1000.0),
        "m" | "meter" | "meters" | "metre" => Some(1.0),
        "ft" | "feet" | "foot" => Some(0.3048),
        "in" | "inch" | "inches" => Some(0.0254),
        "cm" => Some(0.01),
        "mm" => Some(0.001),
        _ => {
            return Err(invalid(
                &p.at,
                format!("`{v}` is not a length unit (none, mi, kft, km, m, ft, in, cm, mm)"),
            ))
        }
    })
}

/// How many of the `from` unit make one `to` unit's worth (OpenDSS's ConvertLineUnits).
fn convert(from: Option<f64>, to: Option<f64>) -> f64 {
    match (from, to) {
        (Some(f), Some(t)) => f / t,
        _ => 1.0,
    }
}

/// The properties of `o` with names, positional ones named by `positions` (the class's leading
/// properties in OpenDSS order, going on after the last named one of them).
fn named<'a>(
    o: &'a Object,
    positions: &[&str],
) -> Result<Vec<(String, &'a Property)>, ImportError> {
    let mut next = 0;
    let mut out = Vec::with_capacity(o.properties.len());
    for p in &o.properties {
        let name = match &p.name {
            Some(n) => {
                next = positions
                    .iter()
                    .position(|x| x == n)
                    .map_or(usize::MAX, |i| i + 1);
                n.clone()
            }
            None => {
                let Some(n) = positions.get(next) else {
                    return Err(invalid(
                        &p.at,
                        format!(
                            "`{}` is given by position where {}.{} takes none: name the property",
                            p.value, o.class, o.name
                        ),
                    ));
                };
                next += 1;
                (*n).to_string()
            }
        };
        out.push((name, p));
    }
    Ok(out)
}

fn unknown(o: &Object, name: &str, p: &Property, known: &[&str]) -> ImportError {
    invalid(
        &p.at,
        format!(
            "{}.{}: `{name}` is not a property this import models (it takes {})",
            o.class,
            o.name,
            known.join(", ")
        ),
    )
}

/// A bus as written (`name.1.2.3`): its name and the nodes given.
fn bus_spec(p: &Property, spec: &str) -> Result<(String, Vec<u8>), ImportError> {
    let mut parts = spec.trim().split('.');
    let name = parts.next().unwrap_or_default().to_ascii_lowercase();
    if name.is_empty() {
        return Err(invalid(&p.at, format!("`{spec}` names no bus")));
    }
    let nodes = parts
        .map(|n| {
            n.parse::<u8>()
                .map_err(|_| invalid(&p.at, format!("`{n}` in `{spec}` is not a node number")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name, nodes))
}

struct Buses {
    list: Vec<Bus>,
    index: HashMap<String, usize>,
}

impl Buses {
    /// The terminal of `nconds` conductors that `spec` describes: nodes 1, 2, ... for the
    /// phases and ground for the rest unless the spec says otherwise.
    fn terminal(
        &mut self,
        p: &Property,
        spec: &str,
        nconds: usize,
        phases: usize,
    ) -> Result<Terminal, ImportError> {
        let (name, given) = bus_spec(p, spec)?;
        if given.len() > nconds {
            return Err(invalid(
                &p.at,
                format!(
                    "`{spec}` names {} nodes for a terminal of {nconds} conductors",
                    given.len()
                ),
            ));
        }
        let mut nodes: Vec<u8> = (0..nconds)
            .map(|i| if i < phases { i as u8 + 1 } else { 0 })
            .collect();
        nodes[..given.len()].copy_from_slice(&given);
        let bus = match self.index.get(&name) {
            Some(&b) => b,
            None => {
                self.list.push(Bus {
                    name: name.clone(),
                    kv_base_ln: 0.0,
                    xy: None,
                });
                self.index.insert(name, self.list.len() - 1);
                self.list.len() - 1
            }
        };
        Ok(Terminal { bus, nodes })
    }
}

/// A line code: impedance and capacitance per unit length.
struct Code {
    phases: usize,
    z: Vec<c64>,
    /// Shunt susceptance per unit length at the code's base frequency (siemens).
    b: Vec<f64>,
    units: Option<f64>,
    base_hz: f64,
    rating_a: f64,
}

/// Sequence values per unit length into phase matrices (the `(2 Z1 + Z0)/3`, `(Z0 - Z1)/3`
/// of a transposed line); capacitances in farads.
#[allow(clippy::too_many_arguments)]
fn from_sequence(
    n: usize,
    r1: f64,
    x1: f64,
    r0: f64,
    x0: f64,
    c1: f64,
    c0: f64,
    hz: f64,
) -> (Vec<c64>, Vec<f64>) {
    let third = 1.0 / 3.0;
    let (z1, z0) = (c64::new(r1, x1), c64::new(r0, x0));
    let zs = (z1 * 2.0 + z0) * third;
    let zm = (z0 - z1) * third;
    let (y1, y0) = (2.0 * PI * hz * c1, 2.0 * PI * hz * c0);
    let ys = (2.0 * y1 + y0) * third;
    let ym = (y0 - y1) * third;
    let mut z = vec![zm; n * n];
    let mut b = vec![ym; n * n];
    for i in 0..n {
        z[i * n + i] = zs;
        b[i * n + i] = ys;
    }
    (z, b)
}

fn square(p: &Property, n: usize) -> Result<Vec<f64>, ImportError> {
    let m = dss::matrix(&p.value).map_err(|r| invalid(&p.at, r))?;
    if m.len() != n {
        return Err(invalid(
            &p.at,
            format!("the matrix is {0}×{0}, the code has {n} phases", m.len()),
        ));
    }
    Ok(m.into_iter().flatten().collect())
}

const LINECODE: &[&str] = &[
    "nphases",
    "r1",
    "x1",
    "r0",
    "x0",
    "c1",
    "c0",
    "units",
    "rmatrix",
    "xmatrix",
    "cmatrix",
    "basefreq",
    "normamps",
    "emergamps",
];

fn linecode(o: &Object, default_hz: f64) -> Result<Code, ImportError> {
    // As OpenDSS keeps a code: phase matrices computed from the sequence values whenever the
    // phases change, a matrix property overwriting its part of them (the real or imaginary
    // part of Z, or the capacitances) and leaving the rest as computed.
    let mut n = 3;
    let (mut r1, mut x1, mut r0, mut x0) = (0.058, 0.1206, 0.1784, 0.4047);
    let (mut c1, mut c0) = (3.4e-9, 1.6e-9);
    let mut hz = default_hz;
    let (mut z, mut b) = from_sequence(n, r1, x1, r0, x0, c1, c0, hz);
    let mut sequence = true;
    let mut units_m = None;
    let mut rating_a = 400.0;
    for (name, p) in named(o, LINECODE)? {
        match name.as_str() {
            "nphases" => {
                let k = count(p, 64)?;
                if k != n {
                    n = k;
                    (z, b) = from_sequence(n, r1, x1, r0, x0, c1, c0, hz);
                }
                sequence = true;
            }
            "r1" => (r1, sequence) = (num(p)?, true),
            "x1" => (x1, sequence) = (num(p)?, true),
            "r0" => (r0, sequence) = (num(p)?, true),
            "x0" => (x0, sequence) = (num(p)?, true),
            "c1" => (c1, sequence) = (num(p)? * 1e-9, true),
            "c0" => c0 = num(p)? * 1e-9,
            "units" => units_m = units(p)?,
            "basefreq" => hz = positive(p, "basefreq")?,
            "normamps" => rating_a = num(p)?,
            "emergamps" => {}
            "rmatrix" | "xmatrix" | "cmatrix" => {
                let m = square(p, n)?;
                sequence = false;
                for (k, v) in m.into_iter().enumerate() {
                    match name.as_str() {
                        "rmatrix" => z[k].re = v,
                        "xmatrix" => z[k].im = v,
                        _ => b[k] = 2.0 * PI * hz * v * 1e-9,
                    }
                }
            }
            _ => return Err(unknown(o, &name, p, LINECODE)),
        }
    }
    if sequence {
        (z, b) = from_sequence(n, r1, x1, r0, x0, c1, c0, hz);
    }
    Ok(Code {
        phases: n,
        z,
        b,
        units: units_m,
        base_hz: hz,
        rating_a,
    })
}

const LINE: &[&str] = &[
    "bus1",
    "bus2",
    "linecode",
    "length",
    "phases",
    "r1",
    "x1",
    "r0",
    "x0",
    "c1",
    "c0",
    "rmatrix",
    "xmatrix",
    "cmatrix",
    "switch",
    "units",
    "normamps",
    "emergamps",
    "enabled",
];

fn line(
    o: &Object,
    codes: &HashMap<String, Code>,
    buses: &mut Buses,
    hz: f64,
) -> Result<Option<Line>, ImportError> {
    enum Spec<'a> {
        Code(&'a Code),
        Sequence,
        Matrix(Vec<f64>, Vec<f64>, Vec<f64>),
    }
    let mut spec = Spec::Sequence;
    let mut phases = 3;
    let (mut r1, mut x1, mut r0, mut x0) = (0.058, 0.1206, 0.1784, 0.4047);
    let (mut c1, mut c0) = (3.4e-9, 1.6e-9);
    let mut cap_given = false;
    let mut length = 1.0;
    let mut units_m: Option<f64> = None;
    let mut rating_a = 400.0;
    let (mut bus1, mut bus2) = (None, None);
    for (name, p) in named(o, LINE)? {
        match name.as_str() {
            "bus1" => bus1 = Some(p),
            "bus2" => bus2 = Some(p),
            "linecode" => {
                let key = p.value.trim().to_ascii_lowercase();
                let code = codes.get(&key).ok_or_else(|| {
                    invalid(
                        &p.at,
                        format!("line code `{key}` is not defined before this line"),
                    )
                })?;
                phases = code.phases;
                rating_a = code.rating_a;
                spec = Spec::Code(code);
            }
            "length" => length = num(p)?,
            "units" => units_m = units(p)?,
            "phases" => {
                let n = count(p, 64)?;
                if let Spec::Code(c) = spec {
                    if c.phases != n {
                        return Err(invalid(
                            &p.at,
                            format!("the line code has {} phases, not {n}", c.phases),
                        ));
                    }
                }
                phases = n;
            }
            "r1" | "x1" | "r0" | "x0" | "c1" | "c0" => {
                let v = num(p)?;
                match name.as_str() {
                    "r1" => r1 = v,
                    "x1" => x1 = v,
                    "r0" => r0 = v,
                    "x0" => x0 = v,
                    "c1" => (c1, cap_given) = (v * 1e-9, true),
                    _ => (c0, cap_given) = (v * 1e-9, true),
                }
                spec = Spec::Sequence;
                units_m = None;
            }
            "rmatrix" | "xmatrix" | "cmatrix" => {
                let m = square(p, phases)?;
                if !matches!(spec, Spec::Matrix(..)) {
                    let z = vec![0.0; phases * phases];
                    spec = Spec::Matrix(z.clone(), z.clone(), z);
                }
                if let Spec::Matrix(r, x, c) = &mut spec {
                    match name.as_str() {
                        "rmatrix" => *r = m,
                        "xmatrix" => *x = m,
                        _ => {
                            *c = m.into_iter().map(|v| v * 1e-9).collect();
                            cap_given = true;
                        }
                    }
                }
                units_m = None;
            }
            "switch" => {
                if flag(p)? {
                    spec = Spec::Sequence;
                    (r1, x1, r0, x0) = (1.0, 1.0, 1.0, 1.0);
                    (c1, c0, cap_given) = (1.1e-9, 1e-9, true);
                    length = 0.001;
                    units_m = None;
                }
            }
            "normamps" => rating_a = num(p)?,
            "emergamps" => {}
            "enabled" => {
                if !flag(p)? {
                    return Ok(None);
                }
            }
            _ => return Err(unknown(o, &name, p, LINE)),
        }
    }
    let length_m = units_m
        .or(match &spec {
            Spec::Code(c) => c.units,
            _ => None,
        })
        .map(|u| length * u);
    let (z, b, multiplier, freq) = match spec {
        Spec::Code(c) => (
            c.z.clone(),
            c.b.clone(),
            length / convert(c.units, units_m),
            hz / c.base_hz,
        ),
        Spec::Sequence => {
            if phases == 1 {
                (r0, x0, c0) = (r1, x1, c1);
            }
            if !cap_given {
                // Default capacitances are per 1000 ft.
                let k = convert(Some(304.8), units_m);
                (c1, c0) = (c1 / k, c0 / k);
            }
            let (z, b) = from_sequence(phases, r1, x1, r0, x0, c1, c0, hz);
            (z, b, length, 1.0)
        }
        Spec::Matrix(r, x, c) => (
            r.iter().zip(&x).map(|(&r, &x)| c64::new(r, x)).collect(),
            c.iter().map(|c| 2.0 * PI * hz * c).collect(),
            length,
            1.0,
        ),
    };
    let n = phases;
    let at = &o.at;
    let bus1 = bus1.ok_or_else(|| invalid(at, format!("line.{} has no bus1", o.name)))?;
    let bus2 = bus2.ok_or_else(|| invalid(at, format!("line.{} has no bus2", o.name)))?;
    Ok(Some(Line {
        name: o.name.clone(),
        from: buses.terminal(bus1, &bus1.value, n, n)?,
        to: buses.terminal(bus2, &bus2.value, n, n)?,
        z_series_ohm: z
            .iter()
            .map(|z| c64::new(z.re * multiplier, z.im * multiplier * freq))
            .collect(),
        y_shunt_s: b
            .iter()
            .map(|b| c64::new(0.0, b * multiplier * freq))
            .collect(),
        rating_a,
        length_m,
    }))
}

const TRANSFORMER: &[&str] = &[
    "phases",
    "windings",
    "wdg",
    "bus",
    "conn",
    "kv",
    "kva",
    "tap",
    "%r",
    "rneut",
    "xneut",
    "buses",
    "conns",
    "kvs",
    "kvas",
    "taps",
    "xhl",
    "xht",
    "xlt",
    "x12",
    "x13",
    "x23",
    "%loadloss",
    "%noloadloss",
    "%imag",
    "ppm_antifloat",
    "%rs",
    "maxtap",
    "mintap",
    "numtaps",
    "sub",
    "bank",
    "normhkva",
    "emerghkva",
    "enabled",
];

fn new_winding() -> Winding {
    Winding {
        terminal: Terminal {
            bus: usize::MAX,
            nodes: vec![],
        },
        connection: Connection::Wye,
        kv: 12.47,
        kva: 1000.0,
        r_pu: 0.002,
        tap_pu: 1.0,
        min_tap_pu: 0.9,
        max_tap_pu: 1.1,
        num_taps: 32,
        r_neutral_ohm: -1.0,
        x_neutral_ohm: 0.0,
    }
}

fn transformer(o: &Object, buses: &mut Buses) -> Result<Option<Transformer>, ImportError> {
    let mut phases = 3;
    let mut w: Vec<Winding> = vec![new_winding(), new_winding()];
    let mut bus: Vec<Option<&Property>> = vec![None, None];
    let mut bus_text: Vec<String> = vec![String::new(), String::new()];
    let mut active = 0;
    let (mut xhl, mut xht, mut xlt) = (0.07, 0.35, 0.30);
    let (mut imag, mut nll, mut ppm) = (0.0, 0.0, 1.0);
    let per_winding = |p: &Property, n: usize| -> Result<Vec<String>, ImportError> {
        let items = dss::array(&p.value);
        if items.len() > n {
            return Err(invalid(
                &p.at,
                format!("{} values for {n} windings", items.len()),
            ));
        }
        Ok(items)
    };
    for (name, p) in named(o, TRANSFORMER)? {
        let n = w.len();
        match name.as_str() {
            "phases" => phases = count(p, 3)?,
            "windings" => {
                let k = count(p, 8)?;
                w.resize_with(k, new_winding);
                bus.resize(k, None);
                bus_text.resize(k, String::new());
                active = active.min(k - 1);
            }
            "wdg" => active = count(p, n)? - 1,
            "bus" => {
                bus[active] = Some(p);
                bus_text[active] = p.value.clone();
            }
            "conn" => w[active].connection = connection(p)?,
            "kv" => w[active].kv = positive(p, "kv")?,
            "kva" => {
                let v = positive(p, "kva")?;
                w[active].kva = v;
                if active == 0 {
                    w.iter_mut().for_each(|x| x.kva = v);
                } else if n == 2 {
                    w[0].kva = v;
                }
            }
            "tap" => w[active].tap_pu = positive(p, "tap")?,
            "%r" => w[active].r_pu = num(p)? / 100.0,
            "rneut" => w[active].r_neutral_ohm = num(p)?,
            "xneut" => w[active].x_neutral_ohm = num(p)?,
            "maxtap" => w[active].max_tap_pu = num(p)?,
            "mintap" => w[active].min_tap_pu = num(p)?,
            "numtaps" => w[active].num_taps = count(p, 10_000)? as u32,
            "buses" => {
                for (k, b) in per_winding(p, n)?.into_iter().enumerate() {
                    bus[k] = Some(p);
                    bus_text[k] = b;
                }
            }
            "conns" => {
                for (k, c) in per_winding(p, n)?.into_iter().enumerate() {
                    let q = Property {
                        name: None,
                        value: c,
                        at: p.at.clone(),
                    };
                    w[k].connection = connection(&q)?;
                }
            }
            "kvs" | "kvas" | "taps" | "%rs" => {
                let v = numbers(p)?;
                if v.len() > n {
                    return Err(invalid(
                        &p.at,
                        format!("{} values for {n} windings", v.len()),
                    ));
                }
                for (k, x) in v.into_iter().enumerate() {
                    match name.as_str() {
                        "kvs" => w[k].kv = x,
                        "kvas" => w[k].kva = x,
                        "taps" => w[k].tap_pu = x,
                        _ => w[k].r_pu = x / 100.0,
                    }
                }
            }
            "xhl" | "x12" => xhl = num(p)? / 100.0,
            "xht" | "x13" => xht = num(p)? / 100.0,
            "xlt" | "x23" => xlt = num(p)? / 100.0,
            "%loadloss" => {
                let r = num(p)? / 200.0;
                w[0].r_pu = r;
                w[1].r_pu = r;
            }
            "%noloadloss" => nll = num(p)?,
            "%imag" => imag = num(p)?,
            "ppm_antifloat" => ppm = num(p)?,
            "sub" | "bank" | "normhkva" | "emerghkva" => {}
            "enabled" => {
                if !flag(p)? {
                    return Ok(None);
                }
            }
            _ => return Err(unknown(o, &name, p, TRANSFORMER)),
        }
    }
    if w.len() > 3 {
        return Err(invalid(
            &o.at,
            format!(
                "transformer.{}: more than 3 windings are not modelled",
                o.name
            ),
        ));
    }
    for (k, winding) in w.iter_mut().enumerate() {
        let p = bus[k].ok_or_else(|| {
            invalid(
                &o.at,
                format!("transformer.{}: winding {} has no bus", o.name, k + 1),
            )
        })?;
        winding.terminal = buses.terminal(p, &bus_text[k], phases + 1, phases)?;
        if winding.tap_pu > winding.max_tap_pu || winding.tap_pu < winding.min_tap_pu {
            winding.tap_pu = winding.tap_pu.clamp(winding.min_tap_pu, winding.max_tap_pu);
        }
    }
    let delta_direction = if w[0].connection == w[1].connection {
        1
    } else {
        let hv = if w[0].kv >= w[1].kv { 0 } else { 1 };
        // ANSI: the high side's delta lags.
        match w[hv].connection {
            Connection::Wye => 1,
            Connection::Delta => -1,
        }
    };
    let x_sc_pu = match w.len() {
        2 => vec![xhl],
        _ => vec![xhl, xht, xlt],
    };
    Ok(Some(Transformer {
        name: o.name.clone(),
        phases,
        windings: w,
        x_sc_pu,
        pct_imag: imag,
        pct_no_load_loss: nll,
        ppm_antifloat: ppm,
        delta_direction,
    }))
}

const REGCONTROL: &[&str] = &[
    "transformer",
    "winding",
    "vreg",
    "band",
    "ptratio",
    "ctprim",
    "r",
    "x",
    "tapwinding",
    "ptphase",
    "maxtapchange",
    "delay",
    "tapdelay",
    "bus",
    "remoteptratio",
    "enabled",
];

fn regcontrol(
    o: &Object,
    transformers: &[Transformer],
    buses: &Buses,
) -> Result<Option<Regulator>, ImportError> {
    let mut r = Regulator {
        name: o.name.clone(),
        transformer: usize::MAX,
        winding: 0,
        tap_winding: 0,
        vreg_v: 120.0,
        band_v: 3.0,
        pt_ratio: 60.0,
        ct_primary_a: 300.0,
        r_ldc_v: 0.0,
        x_ldc_v: 0.0,
        pt_phase: PtPhase::Phase(1),
        max_tap_change: 16,
        delay_s: 15.0,
        enabled: true,
        regulated_node: None,
        remote_pt_ratio: 60.0,
    };
    for (name, p) in named(o, REGCONTROL)? {
        match name.as_str() {
            "transformer" => {
                let t = p.value.trim().to_ascii_lowercase();
                let t = t.strip_prefix("transformer.").unwrap_or(&t);
                r.transformer = transformers
                    .iter()
                    .position(|x| x.name == t)
                    .ok_or_else(|| invalid(&p.at, format!("transformer `{t}` is not defined")))?;
            }
            "winding" => {
                r.winding = count(p, 3)? - 1;
                r.tap_winding = r.winding;
            }
            "tapwinding" => r.tap_winding = count(p, 3)? - 1,
            "vreg" => r.vreg_v = positive(p, "vreg")?,
            "band" => r.band_v = positive(p, "band")?,
            "ptratio" => {
                r.pt_ratio = positive(p, "ptratio")?;
                r.remote_pt_ratio = r.pt_ratio;
            }
            "remoteptratio" => r.remote_pt_ratio = positive(p, "remoteptratio")?,
            "bus" => {
                let spec = p.value.trim().to_ascii_lowercase();
                let (name, node) = match spec.split_once('.') {
                    Some((b, n)) => {
                        let n: u8 = n.split('.').next().unwrap_or("1").parse().map_err(|_| {
                            invalid(&p.at, format!("`{spec}`: `{n}` is not a node number"))
                        })?;
                        (b.to_string(), n)
                    }
                    None => (spec.clone(), 1),
                };
                let bus = buses
                    .index
                    .get(&name)
                    .copied()
                    .ok_or_else(|| invalid(&p.at, format!("bus `{name}` is not defined")))?;
                r.regulated_node = Some((bus, node));
            }
            "ctprim" => r.ct_primary_a = positive(p, "ctprim")?,
            "r" => r.r_ldc_v = num(p)?,
            "x" => r.x_ldc_v = num(p)?,
            "ptphase" => {
                r.pt_phase = match p.value.trim().to_ascii_lowercase().as_str() {
                    "max" => PtPhase::Max,
                    "min" => PtPhase::Min,
                    _ => PtPhase::Phase(count(p, 3)?),
                }
            }
            "maxtapchange" => r.max_tap_change = num(p)?.max(0.0) as u32,
            "delay" => r.delay_s = num(p)?,
            "tapdelay" => {}
            "enabled" => r.enabled = flag(p)?,
            _ => return Err(unknown(o, &name, p, REGCONTROL)),
        }
    }
    let Some(t) = transformers.get(r.transformer) else {
        return Err(invalid(
            &o.at,
            format!("regcontrol.{} names no transformer", o.name),
        ));
    };
    if r.winding >= t.windings.len() || r.tap_winding >= t.windings.len() {
        return Err(invalid(
            &o.at,
            format!(
                "regcontrol.{}: transformer.{} has {} windings",
                o.name,
                t.name,
                t.windings.len()
            ),
        ));
    }
    if let PtPhase::Phase(k) = r.pt_phase {
        if k > t.phases {
            r.pt_phase = PtPhase::Phase(1);
        }
    }
    if r.regulated_node.is_some() {
        if t.windings[r.winding].connection == Connection::Delta {
            return Err(invalid(
                &o.at,
                format!(
                    "regcontrol.{}: a remote regulated bus with a delta winding is not modelled",
                    o.name
                ),
            ));
        }
        // One node is measured.
        r.pt_phase = PtPhase::Phase(1);
    }
    Ok(r.enabled.then_some(r))
}

const CAPACITOR: &[&str] = &[
    "bus1", "bus2", "phases", "kvar", "kv", "conn", "numsteps", "states", "basefreq", "enabled",
];

fn capacitor(o: &Object, buses: &mut Buses, hz: f64) -> Result<Option<Capacitor>, ImportError> {
    let (mut bus1, mut bus2) = (None, None);
    let mut phases = 3;
    // Per step, as OpenDSS keeps them: `numsteps` divides a single kvar among the steps,
    // `kvar` gives up to one value per step.
    let mut kvar = vec![1200.0];
    let mut states: Option<Vec<f64>> = None;
    let mut kv = 12.47;
    let mut conn = Connection::Wye;
    let mut base_hz = hz;
    for (name, p) in named(o, CAPACITOR)? {
        match name.as_str() {
            "bus1" => bus1 = Some(p),
            "bus2" => bus2 = Some(p),
            "phases" => phases = count(p, 3)?,
            "kvar" => {
                let v = numbers(p)?;
                if v.is_empty() {
                    return Err(invalid(&p.at, "kvar needs a value".to_string()));
                }
                let n = kvar.len();
                for (k, x) in v.into_iter().take(n).enumerate() {
                    kvar[k] = x;
                }
            }
            "numsteps" => {
                let n = count(p, 64)?;
                if kvar.len() == 1 && n > 1 {
                    kvar = vec![kvar[0] / n as f64; n];
                } else {
                    let last = *kvar.last().unwrap_or(&0.0);
                    kvar.resize(n, last);
                }
            }
            "states" => states = Some(numbers(p)?),
            "kv" => kv = positive(p, "kv")?,
            "conn" => conn = connection(p)?,
            "basefreq" => base_hz = positive(p, "basefreq")?,
            "enabled" => {
                if !flag(p)? {
                    return Ok(None);
                }
            }
            _ => return Err(unknown(o, &name, p, CAPACITOR)),
        }
    }
    let bus1 = bus1.ok_or_else(|| invalid(&o.at, format!("capacitor.{} has no bus1", o.name)))?;
    let steps = kvar.len() as u32;
    // The steps in service: the first ones (a control adds and removes from the end).
    let in_service = match &states {
        None => steps,
        Some(st) => {
            let on: Vec<bool> = (0..kvar.len())
                .map(|k| st.get(k).is_none_or(|v| *v != 0.0))
                .collect();
            let n = on.iter().take_while(|x| **x).count();
            if on[n..].iter().any(|x| *x) {
                return Err(invalid(
                    &o.at,
                    format!(
                        "capacitor.{}: states must close the first steps and open the rest",
                        o.name
                    ),
                ));
            }
            n as u32
        }
    };
    let phase_kv = match (conn, phases) {
        (Connection::Wye, 2 | 3) => kv / 3f64.sqrt(),
        _ => kv,
    };
    // Every step has the first step's size, as OpenDSS computes it.
    let first = kvar.first().copied().unwrap_or(0.0);
    let w = 2.0 * PI * base_hz;
    let c_f = 1.0 / (w * phase_kv * phase_kv * 1000.0 / (first / phases as f64));
    let step_y_s = c_f * 2.0 * PI * hz;
    let terminal = buses.terminal(bus1, &bus1.value, phases, phases)?;
    let terminal2 = match bus2 {
        Some(p) => buses.terminal(p, &p.value, phases, phases)?,
        None => {
            let name = bus1.value.split('.').next().unwrap_or_default().to_string();
            let spec = format!("{name}{}", ".0".repeat(phases));
            buses.terminal(bus1, &spec, phases, phases)?
        }
    };
    Ok(Some(Capacitor {
        name: o.name.clone(),
        terminal,
        terminal2,
        connection: conn,
        step_y_s,
        steps,
        in_service,
    }))
}

const CAPCONTROL: &[&str] = &[
    "element",
    "terminal",
    "capacitor",
    "type",
    "ptratio",
    "ctratio",
    "onsetting",
    "offsetting",
    "delay",
    "voltoverride",
    "vmax",
    "vmin",
    "delayoff",
    "deadtime",
    "ctphase",
    "ptphase",
    "eventlog",
    "pctminkvar",
    "basefreq",
    "enabled",
];

fn phase_choice(p: &Property) -> Result<PhaseChoice, ImportError> {
    Ok(match p.value.trim().to_ascii_lowercase().as_str() {
        "max" => PhaseChoice::Max,
        "min" => PhaseChoice::Min,
        "avg" => PhaseChoice::Average,
        _ => PhaseChoice::Phase(count(p, 64)?),
    })
}

fn capcontrol(o: &Object, c: &Circuit) -> Result<Option<CapControl>, ImportError> {
    let mut cc = CapControl {
        name: o.name.clone(),
        capacitor: usize::MAX,
        element: Monitored::Line(usize::MAX),
        terminal: 0,
        kind: CapControlKind::Current,
        on: 300.0,
        off: 200.0,
        pt_ratio: 60.0,
        ct_ratio: 60.0,
        pt_phase: PhaseChoice::Phase(1),
        ct_phase: PhaseChoice::Phase(1),
        delay_on_s: 15.0,
        delay_off_s: 15.0,
        dead_time_s: 300.0,
        voltage_override: None,
    };
    let (mut element, mut override_on, mut vmin, mut vmax) = (None, false, 115.0, 126.0);
    for (name, p) in named(o, CAPCONTROL)? {
        match name.as_str() {
            "element" => element = Some(p),
            "terminal" => cc.terminal = count(p, 3)? - 1,
            "capacitor" => {
                let n = p.value.trim().to_ascii_lowercase();
                let n = n.strip_prefix("capacitor.").unwrap_or(&n);
                cc.capacitor = c
                    .capacitors
                    .iter()
                    .position(|x| x.name == n)
                    .ok_or_else(|| invalid(&p.at, format!("capacitor `{n}` is not defined")))?;
            }
            "type" => {
                cc.kind = match p.value.trim().to_ascii_lowercase().as_str() {
                    "v" | "volt" | "voltage" => CapControlKind::Voltage,
                    "c" | "current" => CapControlKind::Current,
                    "k" | "kvar" => CapControlKind::Kvar,
                    other => {
                        return Err(invalid(
                            &p.at,
                            format!(
                            "capcontrol type `{other}` is not modelled (voltage, current, kvar)"
                        ),
                        ))
                    }
                }
            }
            "ptratio" => cc.pt_ratio = positive(p, "ptratio")?,
            "ctratio" => cc.ct_ratio = positive(p, "ctratio")?,
            "onsetting" => cc.on = num(p)?,
            "offsetting" => cc.off = num(p)?,
            "delay" => cc.delay_on_s = num(p)?,
            "delayoff" => cc.delay_off_s = num(p)?,
            "deadtime" => cc.dead_time_s = num(p)?,
            "voltoverride" => override_on = flag(p)?,
            "vmax" => vmax = num(p)?,
            "vmin" => vmin = num(p)?,
            "ptphase" => cc.pt_phase = phase_choice(p)?,
            "ctphase" => cc.ct_phase = phase_choice(p)?,
            "eventlog" | "basefreq" | "pctminkvar" => {}
            "enabled" => {
                if !flag(p)? {
                    return Ok(None);
                }
            }
            _ => return Err(unknown(o, &name, p, CAPCONTROL)),
        }
    }
    if cc.capacitor == usize::MAX {
        return Err(invalid(
            &o.at,
            format!("capcontrol.{} names no capacitor", o.name),
        ));
    }
    let element =
        element.ok_or_else(|| invalid(&o.at, format!("capcontrol.{} names no element", o.name)))?;
    let full = element.value.trim().to_ascii_lowercase();
    let (class, name) = full.split_once('.').ok_or_else(|| {
        invalid(
            &element.at,
            format!("element `{full}` is not class.name (line.x or transformer.x)"),
        )
    })?;
    let (element_conductors, terminals) = match class {
        "line" => {
            let k = c.lines.iter().position(|l| l.name == name);
            let k =
                k.ok_or_else(|| invalid(&element.at, format!("line `{name}` is not defined")))?;
            cc.element = Monitored::Line(k);
            (c.lines[k].phases(), 2)
        }
        "transformer" => {
            let k = c.transformers.iter().position(|t| t.name == name);
            let k = k.ok_or_else(|| {
                invalid(&element.at, format!("transformer `{name}` is not defined"))
            })?;
            cc.element = Monitored::Transformer(k);
            (c.transformers[k].phases, c.transformers[k].windings.len())
        }
        _ => {
            return Err(invalid(
                &element.at,
                format!("a capcontrol measuring a {class} is not modelled (line, transformer)"),
            ))
        }
    };
    if cc.terminal >= terminals {
        return Err(invalid(
            &o.at,
            format!("capcontrol.{}: {full} has {terminals} terminals", o.name),
        ));
    }
    for choice in [&mut cc.pt_phase, &mut cc.ct_phase] {
        if let PhaseChoice::Phase(k) = *choice {
            if k > element_conductors {
                *choice = PhaseChoice::Phase(1);
            }
        }
    }
    if override_on {
        cc.voltage_override = Some((vmin, vmax));
    }
    Ok(Some(cc))
}

const LOAD: &[&str] = &[
    "bus1", "phases", "kv", "kw", "pf", "model", "yearly", "daily", "duty", "conn", "kvar",
    "vminpu", "vmaxpu", "vlowpu", "status", "enabled",
];

fn load(
    o: &Object,
    buses: &mut Buses,
    shapes: &HashMap<String, usize>,
) -> Result<Option<Load>, ImportError> {
    let mut bus1 = None;
    let mut l = Load {
        name: o.name.clone(),
        terminal: Terminal {
            bus: usize::MAX,
            nodes: vec![],
        },
        phases: 3,
        connection: Connection::Wye,
        model: LoadModel::ConstantPower,
        kv: 12.47,
        kw: 10.0,
        kvar: 0.0,
        vmin_pu: 0.95,
        vmax_pu: 1.05,
        vlow_pu: 0.5,
        pf_given: false,
        shape: None,
    };
    let mut pf = 0.88;
    let mut kvar_given = false;
    let (mut yearly, mut daily) = (None, None);
    let shape = |p: &Property| -> Result<usize, ImportError> {
        let k = p.value.trim().to_ascii_lowercase();
        shapes.get(&k).copied().ok_or_else(|| {
            invalid(
                &p.at,
                format!("load shape `{k}` is not defined before this load"),
            )
        })
    };
    for (name, p) in named(o, LOAD)? {
        match name.as_str() {
            "bus1" => bus1 = Some(p),
            "phases" => l.phases = count(p, 3)?,
            "kv" => l.kv = positive(p, "kv")?,
            "kw" => l.kw = num(p)?,
            "kvar" => {
                l.kvar = num(p)?;
                kvar_given = true;
                l.pf_given = false;
            }
            "pf" => {
                pf = num(p)?;
                if pf == 0.0 || pf.abs() > 1.0 {
                    return Err(invalid(&p.at, format!("pf must be in [-1, 1] and not 0, not {pf}")));
                }
                kvar_given = false;
                l.pf_given = true;
            }
            "model" => {
                l.model = match num(p)? {
                    1.0 => LoadModel::ConstantPower,
                    2.0 => LoadModel::ConstantImpedance,
                    5.0 => LoadModel::ConstantCurrent,
                    m => {
                        return Err(invalid(
                            &p.at,
                            format!("load model {m} is not modelled (it takes 1: constant power, 2: constant impedance, 5: constant current)"),
                        ))
                    }
                }
            }
            "yearly" => yearly = Some(shape(p)?),
            "daily" => daily = Some(shape(p)?),
            "duty" => {}
            "conn" => l.connection = connection(p)?,
            "vminpu" => l.vmin_pu = num(p)?,
            "vmaxpu" => l.vmax_pu = num(p)?,
            "vlowpu" => l.vlow_pu = num(p)?,
            "status" => {
                if !p.value.trim().eq_ignore_ascii_case("variable") {
                    return Err(invalid(&p.at, "only status=variable is modelled"));
                }
            }
            "enabled" => {
                if !flag(p)? {
                    return Ok(None);
                }
            }
            _ => return Err(unknown(o, &name, p, LOAD)),
        }
    }
    if !kvar_given {
        l.kvar = l.kw * (1.0 / (pf * pf) - 1.0).sqrt() * pf.signum();
    }
    l.shape = yearly.or(daily);
    let bus1 = bus1.ok_or_else(|| invalid(&o.at, format!("load.{} has no bus1", o.name)))?;
    let nconds = match (l.connection, l.phases) {
        (Connection::Delta, 3) => 3,
        _ => l.phases + 1,
    };
    l.terminal = buses.terminal(bus1, &bus1.value, nconds, l.phases)?;
    Ok(Some(l))
}

const GENERATOR: &[&str] = &[
    "bus1", "phases", "kv", "kw", "kvar", "pf", "model", "conn", "vminpu", "vmaxpu", "yearly",
    "daily", "duty", "enabled",
];

/// A generator as a load drawing negative power (OpenDSS's model 1, constant kW and kvar;
/// its voltage limits default to 0.9 and 1.1 pu).
fn generator(
    o: &Object,
    buses: &mut Buses,
    shapes: &HashMap<String, usize>,
) -> Result<Option<Load>, ImportError> {
    let mut as_load = o.clone();
    for p in &mut as_load.properties {
        if let Some(name) = &p.name {
            if !GENERATOR.contains(&name.as_str()) {
                return Err(unknown(o, name, p, GENERATOR));
            }
            if name == "model" && num(p)? != 1.0 {
                return Err(invalid(
                    &p.at,
                    "only generator model 1 (constant kW and kvar) is modelled",
                ));
            }
        }
    }
    // A generator's defaults where they differ from a load's, ahead of what the script says.
    for (k, (name, value)) in [
        ("vminpu", "0.9"),
        ("vmaxpu", "1.1"),
        ("kw", "1000"),
        ("pf", "0.8"),
    ]
    .into_iter()
    .enumerate()
    {
        as_load.properties.insert(
            k,
            Property {
                name: Some(name.into()),
                value: value.into(),
                at: o.at.clone(),
            },
        );
    }
    let Some(mut g) = load(&as_load, buses, shapes)? else {
        return Ok(None);
    };
    g.kw = -g.kw;
    g.kvar = -g.kvar;
    g.model = LoadModel::Source;
    Ok(Some(g))
}

/// The connection and limits PV systems and storage share with loads, and how they set their
/// reactive power (the last of `pf` and `kvar` written wins, as in OpenDSS).
struct Inverter<'a> {
    bus1: Option<&'a Property>,
    phases: usize,
    kv: f64,
    connection: Connection,
    vmin_pu: f64,
    vmax_pu: f64,
    kva: Option<f64>,
    vars: Vars,
    /// The most kvar it delivers and absorbs (`kvarmax`, `kvarmaxabs`).
    kvar_max: Option<f64>,
    kvar_max_abs: Option<f64>,
    cut_in_pct: f64,
    cut_out_pct: f64,
}

#[derive(Clone, Copy)]
enum Vars {
    Pf(f64),
    Kvar(f64),
}

impl<'a> Inverter<'a> {
    fn new(cut_pct: f64) -> Inverter<'a> {
        Inverter {
            bus1: None,
            phases: 3,
            kv: 12.47,
            connection: Connection::Wye,
            vmin_pu: 0.9,
            vmax_pu: 1.1,
            kva: None,
            vars: Vars::Pf(1.0),
            kvar_max: None,
            kvar_max_abs: None,
            cut_in_pct: cut_pct,
            cut_out_pct: cut_pct,
        }
    }

    /// Takes `name` if it is one of the shared properties.
    fn take(&mut self, name: &str, p: &'a Property) -> Result<bool, ImportError> {
        match name {
            "bus1" => self.bus1 = Some(p),
            "phases" => self.phases = count(p, 3)?,
            "kv" => self.kv = positive(p, "kv")?,
            "conn" => self.connection = connection(p)?,
            "vminpu" => self.vmin_pu = num(p)?,
            "vmaxpu" => self.vmax_pu = num(p)?,
            "kva" => self.kva = Some(positive(p, "kva")?),
            "pf" => {
                let pf = num(p)?;
                if pf == 0.0 || pf.abs() > 1.0 {
                    return Err(invalid(
                        &p.at,
                        format!("pf must be in [-1, 1] and not 0, not {pf}"),
                    ));
                }
                self.vars = Vars::Pf(pf);
            }
            "kvar" => self.vars = Vars::Kvar(num(p)?),
            "kvarmax" => self.kvar_max = Some(num(p)?.abs()),
            "kvarmaxabs" => self.kvar_max_abs = Some(num(p)?.abs()),
            "%cutin" => self.cut_in_pct = num(p)?,
            "%cutout" => self.cut_out_pct = num(p)?,
            "model" => {
                if num(p)? != 1.0 {
                    return Err(invalid(
                        &p.at,
                        "only model 1 (constant kW and kvar) is modelled",
                    ));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The kvar it delivers with `kw` delivered, and the kW the kVA rating leaves (OpenDSS's
    /// inverter with neither watt nor power-factor priority: vars first).
    fn output(&self, kw: f64, kva: f64, idling: bool) -> (f64, f64) {
        let limit = self.kvar_max.unwrap_or(kva);
        let limit_neg = self.kvar_max_abs.unwrap_or(limit);
        let sign = |x: f64| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        };
        let mut kw = kw;
        let kvar = match self.vars {
            Vars::Pf(pf) if idling => {
                let q = kw * (1.0 / (pf * pf) - 1.0).sqrt() * sign(pf);
                if q > 0.0 && q.abs() > limit {
                    limit
                } else if q < 0.0 && q.abs() > limit_neg {
                    limit_neg * sign(q)
                } else {
                    q
                }
            }
            Vars::Pf(1.0) => 0.0,
            Vars::Pf(pf) => {
                let q = kw * (1.0 / (pf * pf) - 1.0).sqrt() * sign(pf);
                if q.abs() > limit || q.abs() > limit_neg {
                    let l = if q > 0.0 { limit } else { limit_neg };
                    l * sign(kw) * sign(pf)
                } else {
                    q
                }
            }
            Vars::Kvar(q) if idling => {
                if q > 0.0 && q.abs() > limit {
                    limit
                } else if q < 0.0 && q.abs() > limit_neg {
                    limit_neg * sign(q)
                } else {
                    q
                }
            }
            Vars::Kvar(q) => {
                if q > 0.0 && q.abs() >= limit {
                    limit * sign(q)
                } else if q < 0.0 && q.abs() >= limit_neg {
                    limit_neg * sign(q)
                } else {
                    q
                }
            }
        };
        if kw.hypot(kvar) > kva {
            kw = (kva * kva - kvar * kvar).max(0.0).sqrt() * sign(kw);
        }
        (kw, kvar)
    }

    /// The element as a load drawing `-kw` and `-kvar`.
    fn into_load(
        self,
        o: &Object,
        buses: &mut Buses,
        (kw, kvar): (f64, f64),
    ) -> Result<Load, ImportError> {
        let class = &o.class;
        let bus1 = self
            .bus1
            .ok_or_else(|| invalid(&o.at, format!("{class}.{} has no bus1", o.name)))?;
        let nconds = match (self.connection, self.phases) {
            (Connection::Delta, 3) => 3,
            _ => self.phases + 1,
        };
        Ok(Load {
            name: o.name.clone(),
            terminal: buses.terminal(bus1, &bus1.value, nconds, self.phases)?,
            phases: self.phases,
            connection: self.connection,
            model: LoadModel::Source,
            kv: self.kv,
            kw: -kw,
            kvar: -kvar,
            vmin_pu: self.vmin_pu,
            vmax_pu: self.vmax_pu,
            vlow_pu: 0.0,
            pf_given: matches!(self.vars, Vars::Pf(_)),
            shape: None,
        })
    }
}

const PVSYSTEM: &[&str] = &[
    "phases",
    "bus1",
    "kv",
    "irradiance",
    "pmpp",
    "%pmpp",
    "temperature",
    "pf",
    "conn",
    "kvar",
    "kva",
    "%cutin",
    "%cutout",
    "vminpu",
    "vmaxpu",
    "kvarmax",
    "kvarmaxabs",
    "model",
    "enabled",
];

/// A PV system (OpenDSS's PVSystem, model 1, in a snapshot): the panels make irradiance ×
/// Pmpp, capped at %Pmpp of it; the inverter is off below %cutout of its kVA, sets its vars by
/// `pf` or `kvar` within `kvarmax`, and gives up watts to stay within its kVA. No efficiency or
/// temperature curves: those are named errors.
fn pvsystem(o: &Object, buses: &mut Buses) -> Result<Option<Load>, ImportError> {
    let mut inv = Inverter::new(20.0);
    let (mut irradiance, mut pmpp, mut pct_pmpp) = (1.0, 500.0, 100.0);
    for (name, p) in named(o, PVSYSTEM)? {
        if inv.take(&name, p)? {
            continue;
        }
        match name.as_str() {
            "irradiance" => irradiance = num(p)?,
            "pmpp" => pmpp = num(p)?,
            "%pmpp" => pct_pmpp = num(p)?,
            // Without a power-temperature curve the temperature changes nothing.
            "temperature" => {}
            "enabled" => {
                if !flag(p)? {
                    return Ok(None);
                }
            }
            _ => return Err(unknown(o, &name, p, PVSYSTEM)),
        }
    }
    let kva = inv.kva.unwrap_or(500.0);
    let panel_kw = irradiance * pmpp;
    let on = panel_kw >= inv.cut_out_pct * kva / 100.0;
    let kw = if on {
        panel_kw.min(pmpp * pct_pmpp / 100.0)
    } else {
        0.0
    };
    let out = inv.output(kw, kva, false);
    Ok(Some(inv.into_load(o, buses, out)?))
}

const STORAGE: &[&str] = &[
    "phases",
    "bus1",
    "kv",
    "conn",
    "kw",
    "kvar",
    "pf",
    "kva",
    "%kwrated",
    "kwrated",
    "kwhrated",
    "kwhstored",
    "%stored",
    "%reserve",
    "state",
    "%discharge",
    "%charge",
    "%effcharge",
    "%effdischarge",
    "%idlingkw",
    "%cutin",
    "%cutout",
    "vminpu",
    "vmaxpu",
    "kvarmax",
    "kvarmaxabs",
    "dispmode",
    "model",
    "enabled",
];

#[derive(Clone, Copy, PartialEq)]
enum StorageState {
    Charging,
    Discharging,
    Idling,
}

/// A battery (OpenDSS's Storage, model 1, in a snapshot): by its state it discharges
/// %discharge of its kW rating, charges %charge of it, or idles drawing %idlingkW; it cannot
/// charge when full nor discharge at its reserve (then it idles). `kw` sets the state and the
/// rate. Its inverter then works as a PV system's. Dispatch modes that follow a shape, a price
/// or a load are named errors.
fn storage(o: &Object, buses: &mut Buses) -> Result<Option<Load>, ImportError> {
    let mut inv = Inverter::new(0.0);
    let mut state = StorageState::Idling;
    let (mut kw_rated, mut pct_kw_rated, mut kwh_rated) = (25.0, 100.0, 50.0);
    let (mut kwh_stored, mut pct_reserve) = (None::<f64>, 20.0);
    let (mut pct_out, mut pct_in, mut pct_idling) = (100.0, 100.0, 1.0);
    for (name, p) in named(o, STORAGE)? {
        if inv.take(&name, p)? {
            continue;
        }
        match name.as_str() {
            "kw" => {
                let kw = num(p)?;
                if kw > 0.0 {
                    state = StorageState::Discharging;
                    pct_out = kw / kw_rated * 100.0;
                } else if kw < 0.0 {
                    state = StorageState::Charging;
                    pct_in = -kw / kw_rated * 100.0;
                } else {
                    state = StorageState::Idling;
                }
            }
            "kwrated" => kw_rated = positive(p, "kwrated")?,
            "%kwrated" => pct_kw_rated = num(p)?,
            "kwhrated" => {
                kwh_rated = positive(p, "kwhrated")?;
                // A new rating is fully charged.
                kwh_stored = None;
            }
            "kwhstored" => kwh_stored = Some(num(p)?),
            "%stored" => kwh_stored = Some(num(p)? / 100.0 * kwh_rated),
            "%reserve" => pct_reserve = num(p)?,
            "state" => {
                state = match p.value.trim().to_ascii_lowercase().chars().next() {
                    Some('c') => StorageState::Charging,
                    Some('d') => StorageState::Discharging,
                    Some('i') => StorageState::Idling,
                    _ => {
                        return Err(invalid(
                            &p.at,
                            format!(
                                "`{}` is not a storage state (charging, discharging, idling)",
                                p.value.trim()
                            ),
                        ))
                    }
                }
            }
            "%discharge" => pct_out = num(p)?,
            "%charge" => pct_in = num(p)?,
            "%idlingkw" => pct_idling = num(p)?,
            // Efficiencies change what is stored, not what the terminal sees.
            "%effcharge" | "%effdischarge" => {}
            "dispmode" => {
                let m = p.value.trim().to_ascii_lowercase();
                if m != "default" && m != "external" {
                    return Err(invalid(
                        &p.at,
                        format!("storage dispmode `{m}` is not modelled (default, external)"),
                    ));
                }
            }
            "enabled" => {
                if !flag(p)? {
                    return Ok(None);
                }
            }
            _ => return Err(unknown(o, &name, p, STORAGE)),
        }
    }
    let kva = inv.kva.unwrap_or(kw_rated);
    let stored = kwh_stored.unwrap_or(kwh_rated);
    let reserve = kwh_rated * pct_reserve / 100.0;
    let idling_kw = pct_idling * kw_rated / 100.0;
    let mut kw = match state {
        StorageState::Charging if stored < kwh_rated => -kw_rated * pct_in / 100.0,
        StorageState::Discharging if stored > reserve => kw_rated * pct_out / 100.0,
        _ => {
            state = StorageState::Idling;
            -idling_kw
        }
    };
    if kw.abs() < inv.cut_out_pct * kva / 100.0 {
        state = StorageState::Idling;
        kw = -idling_kw;
    } else {
        let limit = kw_rated * pct_kw_rated / 100.0;
        kw = match state {
            StorageState::Discharging => kw.min(limit),
            _ => kw.max(-limit),
        };
    }
    let out = inv.output(kw, kva, state == StorageState::Idling);
    Ok(Some(inv.into_load(o, buses, out)?))
}

const LOADSHAPE: &[&str] = &[
    "npts",
    "interval",
    "mult",
    "minterval",
    "sinterval",
    "qmult",
    "useactual",
];

/// The values of a `mult`: inline, or `file=PATH` (one per line, the first field of each),
/// relative to the file that wrote it.
fn multipliers(p: &Property) -> Result<Vec<f64>, ImportError> {
    let v = p.value.trim();
    let Some(path) = v
        .strip_prefix("file=")
        .or_else(|| v.strip_prefix("File="))
        .or_else(|| v.strip_prefix("FILE="))
    else {
        return numbers(p);
    };
    let path = path.trim().trim_matches(|c| c == '"' || c == '\'');
    let full = p.at.file.parent().unwrap_or(Path::new(".")).join(path);
    let text = std::fs::read_to_string(&full).map_err(|error| ImportError::Read {
        at: p.at.clone(),
        path: full.clone(),
        error,
    })?;
    let mut out = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let Some(first) = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .find(|t| !t.is_empty())
        else {
            continue;
        };
        let x: f64 = first.parse().map_err(|_| {
            invalid(
                &p.at,
                format!("{}:{}: `{first}` is not a number", full.display(), k + 1),
            )
        })?;
        out.push(x);
        if out.len() > MAX_SHAPE_POINTS {
            return Err(invalid(
                &p.at,
                format!("more than {MAX_SHAPE_POINTS} points"),
            ));
        }
    }
    Ok(out)
}

fn loadshape(o: &Object) -> Result<LoadShape, ImportError> {
    let mut npts = None;
    let mut interval_h = 1.0;
    let mut p_mult = vec![];
    let mut q_mult = None;
    let mut use_actual = false;
    for (name, p) in named(o, LOADSHAPE)? {
        match name.as_str() {
            "npts" => npts = Some(count(p, MAX_SHAPE_POINTS)?),
            "interval" => interval_h = positive(p, "interval")?,
            "minterval" => interval_h = positive(p, "minterval")? / 60.0,
            "sinterval" => interval_h = positive(p, "sinterval")? / 3600.0,
            "mult" => p_mult = multipliers(p)?,
            "qmult" => q_mult = Some(multipliers(p)?),
            "useactual" => use_actual = flag(p)?,
            _ => return Err(unknown(o, &name, p, LOADSHAPE)),
        }
    }
    if let Some(n) = npts {
        p_mult.truncate(n);
        if let Some(q) = &mut q_mult {
            q.truncate(n);
        }
    }
    Ok(LoadShape {
        name: o.name.clone(),
        interval_h,
        p_mult,
        q_mult,
        use_actual,
    })
}

const VSOURCE: &[&str] = &[
    "bus1",
    "basekv",
    "pu",
    "angle",
    "frequency",
    "phases",
    "mvasc3",
    "mvasc1",
    "x1r1",
    "x0r0",
    "isc3",
    "isc1",
    "r1",
    "x1",
    "r0",
    "x0",
    "bus2",
    "basefreq",
    "enabled",
];

fn vsource(o: &Object, buses: &mut Buses, hz: f64) -> Result<Option<Source>, ImportError> {
    let (mut kv, mut pu, mut angle, mut phases) = (115.0, 1.0, 0.0, 3);
    let (mut mvasc3, mut mvasc1, mut isc3, mut isc1) = (2000.0, 2100.0, 10000.0, 10540.0);
    let (mut x1r1, mut x0r0) = (4.0, 3.0);
    let (mut r1, mut x1, mut r0, mut x0) = (1.65, 6.6, 1.9, 5.7);
    let mut spec = 1;
    let mut bus1: Option<(Property, String)> = None;
    for (name, p) in named(o, VSOURCE)? {
        match name.as_str() {
            "bus1" => bus1 = Some((p.clone(), p.value.clone())),
            "basekv" => kv = positive(p, "basekv")?,
            "pu" => pu = num(p)?,
            "angle" => angle = num(p)?,
            "phases" => phases = count(p, 3)?,
            "mvasc3" => (mvasc3, spec) = (positive(p, "mvasc3")?, 1),
            "mvasc1" => (mvasc1, spec) = (positive(p, "mvasc1")?, 1),
            "isc3" => (isc3, spec) = (positive(p, "isc3")?, 2),
            "isc1" => (isc1, spec) = (positive(p, "isc1")?, 2),
            "x1r1" => x1r1 = positive(p, "x1r1")?,
            "x0r0" => x0r0 = positive(p, "x0r0")?,
            "r1" => (r1, spec) = (num(p)?, 3),
            "x1" => (x1, spec) = (num(p)?, 3),
            "r0" => (r0, spec) = (num(p)?, 3),
            "x0" => (x0, spec) = (num(p)?, 3),
            "frequency" | "basefreq" => {
                let f = positive(p, &name)?;
                if f != hz {
                    return Err(invalid(
                        &p.at,
                        format!("the source's {f} Hz is not the circuit's {hz} Hz"),
                    ));
                }
            }
            "bus2" => {
                let (_, nodes) = bus_spec(p, &p.value)?;
                if nodes.iter().any(|&n| n != 0) || nodes.is_empty() {
                    return Err(invalid(
                        &p.at,
                        "only a grounded source (bus2 on node 0) is modelled",
                    ));
                }
            }
            "enabled" => {
                if !flag(p)? {
                    return Ok(None);
                }
            }
            _ => return Err(unknown(o, &name, p, VSOURCE)),
        }
    }
    let factor = if phases == 1 { 1.0 } else { 3f64.sqrt() };
    let sqrt3 = 3f64.sqrt();
    let zero_sequence = |r1: f64, x1: f64, isc1: f64| -> Result<(f64, f64), ImportError> {
        // OpenDSS's quadratic for R0 from the single-phase fault current.
        let a = 1.0 + x0r0 * x0r0;
        let b = 4.0 * (r1 + x1 * x0r0);
        let c = 4.0 * (r1 * r1 + x1 * x1) - (3.0 * kv * 1000.0 / factor / isc1).powi(2);
        let disc = b * b - 4.0 * a * c;
        if disc < 0.0 {
            return Err(invalid(
                &o.at,
                format!("vsource.{}: no real R0 fits these fault levels", o.name),
            ));
        }
        let (s1, s2) = (
            (-b + disc.sqrt()) / (2.0 * a),
            (-b - disc.sqrt()) / (2.0 * a),
        );
        let r0 = s1.max(s2);
        Ok((r0, r0 * x0r0))
    };
    (r1, x1, r0, x0) = match spec {
        1 | 2 => {
            if spec == 2 {
                mvasc3 = sqrt3 * kv * isc3 / 1000.0;
            } else {
                isc1 = mvasc1 * 1000.0 / (factor * kv);
            }
            let x1 = kv * kv / mvasc3 / (1.0 + 1.0 / (x1r1 * x1r1)).sqrt();
            let r1 = x1 / x1r1;
            let (r0, x0) = zero_sequence(r1, x1, isc1)?;
            (r1, x1, r0, x0)
        }
        _ if phases == 1 => (r1, x1, r1, x1),
        _ => (r1, x1, r0, x0),
    };
    let (zs, zm) = (
        c64::new((2.0 * r1 + r0) / 3.0, (2.0 * x1 + x0) / 3.0),
        c64::new((r0 - r1) / 3.0, (x0 - x1) / 3.0),
    );
    let mut z = vec![zm; phases * phases];
    for i in 0..phases {
        z[i * phases + i] = zs;
    }
    let voltage_v = if phases == 1 {
        kv * pu * 1000.0
    } else {
        kv * pu * 1000.0 / 2.0 / (PI / phases as f64).sin()
    };
    let (p, spec) = bus1.unwrap_or_else(|| {
        (
            Property {
                name: Some("bus1".into()),
                value: "sourcebus".into(),
                at: o.at.clone(),
            },
            "sourcebus".into(),
        )
    });
    Ok(Some(Source {
        name: o.name.clone(),
        terminal: buses.terminal(&p, &spec, phases, phases)?,
        voltage_v,
        angle_deg: angle,
        z_ohm: z,
    }))
}

/// `Set` options this import takes; the ones marked `false` only change what OpenDSS reports.
const OPTIONS: &[&str] = &[
    "defaultbasefrequency",
    "voltagebases",
    "loadmult",
    "maxiterations",
    "tolerance",
    "maxcontroliter",
    "controlmode",
    "algorithm",
    "mode",
    "number",
    "stepsize",
    "overloadreport",
    "voltexcept",
    "demand",
    "diverbose",
    "year",
    "casename",
    "datapath",
    "editor",
    "showexport",
    "markercode",
    "nodewidth",
];

fn bus_coords(path: &Path, buses: &mut Buses) -> Result<(), ImportError> {
    let at = At {
        file: path.to_path_buf(),
        line: 0,
    };
    let text = std::fs::read_to_string(path).map_err(|error| ImportError::Read {
        at: at.clone(),
        path: path.to_path_buf(),
        error,
    })?;
    for (k, line) in text.lines().enumerate() {
        let f: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .collect();
        if f.is_empty() || f[0].starts_with('!') || f[0].starts_with("//") {
            continue;
        }
        let here = At {
            file: path.to_path_buf(),
            line: k + 1,
        };
        let (Some(x), Some(y)) = (f.get(1), f.get(2)) else {
            return Err(invalid(&here, "a bus coordinate is `name, x, y`"));
        };
        let (x, y) = (
            x.parse::<f64>()
                .map_err(|_| invalid(&here, format!("`{x}` is not a number")))?,
            y.parse::<f64>()
                .map_err(|_| invalid(&here, format!("`{y}` is not a number")))?,
        );
        // Coordinates of buses no element uses are left out.
        if let Some(&b) = buses.index.get(&f[0].to_ascii_lowercase()) {
            buses.list[b].xy = Some((x, y));
        }
    }
    Ok(())
}

impl Circuit {
    /// Reads the OpenDSS script at `path` (and every file it redirects to) into a circuit, with
    /// each bus's voltage base where the script sets voltage bases.
    pub fn read_dss(path: &Path) -> Result<Circuit, ImportError> {
        Circuit::from_dss(&dss::read(path)?)
    }

    /// The circuit a script defines.
    pub fn from_dss(script: &Script) -> Result<Circuit, ImportError> {
        for (name, p) in &script.options {
            if !OPTIONS.contains(&name.as_str()) {
                return Err(invalid(
                    &p.at,
                    format!(
                        "`Set {name}` is not an option this import takes ({})",
                        OPTIONS.join(", ")
                    ),
                ));
            }
        }
        let option = |k: &str| script.options.get(k);
        let frequency_hz = match option("defaultbasefrequency") {
            Some(p) => positive(p, "defaultbasefrequency")?,
            None => 60.0,
        };
        if let Some(p) = option("controlmode") {
            let m = p.value.trim().to_ascii_lowercase();
            if m != "static" && m != "off" {
                return Err(invalid(
                    &p.at,
                    format!("controlmode `{m}` is not modelled (static, off)"),
                ));
            }
        }
        if let Some(p) = option("mode") {
            // A script's own time series is run by `time_series` (`gridmesh grid timeseries`);
            // a mode this import cannot stand behind is refused.
            let m = p.value.trim().to_ascii_lowercase();
            if ![
                "snapshot",
                "snap",
                "yearly",
                "y",
                "daily",
                "dutycycle",
                "duty",
            ]
            .contains(&m.as_str())
            {
                return Err(invalid(
                    &p.at,
                    format!("mode `{m}` is not modelled (snapshot, and the load-shape modes yearly, daily and duty through `gridmesh grid timeseries`)"),
                ));
            }
        }
        if let Some(p) = option("algorithm") {
            if !p.value.trim().eq_ignore_ascii_case("normal") {
                return Err(invalid(
                    &p.at,
                    "only algorithm=normal (current injection) is modelled",
                ));
            }
        }
        let load_mult = option("loadmult").map(num).transpose()?.unwrap_or(1.0);
        let mut solve_options = super::SolveOptions::default();
        if let Some(p) = option("tolerance") {
            solve_options.tolerance_pu = positive(p, "tolerance")?;
        }
        if let Some(p) = option("maxiterations") {
            solve_options.max_iterations = count(p, 100_000)?;
        }
        if let Some(p) = option("maxcontroliter") {
            solve_options.max_control_iterations = count(p, 100_000)?;
        }
        if option("controlmode").is_some_and(|p| p.value.trim().eq_ignore_ascii_case("off")) {
            solve_options.max_control_iterations = 1;
        }
        let voltage_bases_kv = match option("voltagebases") {
            Some(p) => numbers(p)?,
            None => vec![],
        };
        let name = script
            .of_class("circuit")
            .next()
            .ok_or(ImportError::NoCircuit)?
            .name
            .clone();
        let mut buses = Buses {
            list: vec![],
            index: HashMap::new(),
        };
        let mut codes = HashMap::new();
        let mut shape_index = HashMap::new();
        let mut c = Circuit {
            name,
            frequency_hz,
            buses: vec![],
            sources: vec![],
            lines: vec![],
            transformers: vec![],
            regulators: vec![],
            capacitors: vec![],
            cap_controls: vec![],
            loads: vec![],
            generators: vec![],
            load_shapes: vec![],
            voltage_bases_kv,
            load_mult,
            solve_options,
        };
        // Sources first, so the source bus is the first bus as in OpenDSS.
        for o in script.of_class("vsource") {
            if let Some(s) = vsource(o, &mut buses, frequency_hz)? {
                c.sources.push(s);
            }
        }
        for o in &script.objects {
            match o.class.as_str() {
                "linecode" => {
                    codes.insert(o.name.clone(), linecode(o, frequency_hz)?);
                }
                "loadshape" => {
                    shape_index.insert(o.name.clone(), c.load_shapes.len());
                    c.load_shapes.push(loadshape(o)?);
                }
                "line" => c.lines.extend(line(o, &codes, &mut buses, frequency_hz)?),
                "transformer" => c.transformers.extend(transformer(o, &mut buses)?),
                "capacitor" => c.capacitors.extend(capacitor(o, &mut buses, frequency_hz)?),
                "load" => c.loads.extend(load(o, &mut buses, &shape_index)?),
                "generator" => c.generators.extend(generator(o, &mut buses, &shape_index)?),
                "pvsystem" => c.generators.extend(pvsystem(o, &mut buses)?),
                "storage" => c.generators.extend(storage(o, &mut buses)?),
                _ => {}
            }
        }
        for o in script.of_class("regcontrol") {
            c.regulators.extend(regcontrol(o, &c.transformers, &buses)?);
        }
        for o in script.of_class("capcontrol") {
            if let Some(cc) = capcontrol(o, &c)? {
                c.cap_controls.push(cc);
            }
        }
        for path in &script.bus_coords {
            bus_coords(path, &mut buses)?;
        }
        c.buses = buses.list;
        if c.sources.is_empty() {
            return Err(ImportError::NoCircuit);
        }
        if !c.voltage_bases_kv.is_empty() {
            c.set_voltage_bases()?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(text: &str) -> Result<Circuit, ImportError> {
        Circuit::from_dss(&dss::parse(text, Path::new("/x/case.dss")).unwrap())
    }

    const HEAD: &str = "new circuit.c basekv=12.47\n";

    /// A regulator holding a remote bus: the bus and node named, and an unknown bus refused.
    #[test]
    fn a_regulator_may_hold_a_remote_bus() {
        let base = "new transformer.t phases=3 windings=2 buses=[sourcebus b] conns=[wye wye] kvs=[12.47 12.47] kvas=[5000 5000]\nnew line.l bus1=b bus2=far r1=0.1 x1=0.2\n";
        let c = import(&format!(
            "{HEAD}{base}new regcontrol.r transformer=t winding=2 ptratio=60 bus=far.3\n"
        ))
        .unwrap();
        let r = &c.regulators[0];
        assert_eq!(r.regulated_node, Some((c.bus("far").unwrap(), 3)));
        assert_eq!(r.remote_pt_ratio, 60.0, "the PT ratio unless told");
        let e = import(&format!(
            "{HEAD}{base}new regcontrol.r transformer=t winding=2 bus=nowhere.1\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("case.dss:4") && e.contains("bus `nowhere`"),
            "{e}"
        );
    }

    /// PV systems and batteries: OpenDSS's defaults and states, and what is not modelled named.
    #[test]
    fn pv_systems_and_batteries_deliver_by_their_settings() {
        let c = import(&format!(
            "{HEAD}new pvsystem.p bus1=sourcebus\nnew storage.idle bus1=sourcebus\nnew storage.d bus1=sourcebus kwrated=100 kw=40 kva=41 kvar=20\nnew storage.reserve bus1=sourcebus kw=10 %stored=20\n"
        ))
        .unwrap();
        let g = |n: &str| c.generators.iter().find(|g| g.name == n).unwrap();
        // 500 kWp at full sun, unity power factor.
        assert_eq!((g("p").kw, g("p").kvar), (-500.0, 0.0));
        assert_eq!(g("p").model, LoadModel::Source);
        // Full and idling: 1 % of 25 kW drawn.
        assert!((g("idle").kw - 0.25).abs() < 1e-12);
        // 40 kW and 20 kvar asked of 41 kVA: the vars stay, the watts give way.
        let d = g("d");
        assert!((d.kvar + 20.0).abs() < 1e-12);
        assert!(
            (d.kw + (41.0f64 * 41.0 - 400.0).sqrt()).abs() < 1e-9,
            "{}",
            d.kw
        );
        // At its reserve it cannot discharge: it idles.
        assert!((g("reserve").kw - 0.25).abs() < 1e-12);
        for (extra, why) in [
            (
                "new storage.x bus1=sourcebus dispmode=follow\n",
                "dispmode `follow` is not modelled",
            ),
            (
                "new storage.x bus1=sourcebus state=full\n",
                "not a storage state",
            ),
            ("new pvsystem.x bus1=sourcebus model=2\n", "only model 1"),
            ("new pvsystem.x bus1=sourcebus effcurve=eff\n", "`effcurve`"),
            ("new pvsystem.x kva=10\n", "has no bus1"),
            ("new storage.x bus1=sourcebus pf=1.2\n", "pf must be"),
        ] {
            let e = import(&format!("{HEAD}{extra}")).unwrap_err().to_string();
            assert!(e.contains("case.dss:2") && e.contains(why), "{extra}: {e}");
        }
    }

    /// A capacitor control's mistakes are named too: what it measures, which bank, a type not
    /// modelled, a bank whose states leave a gap.
    #[test]
    fn capacitor_control_mistakes_are_named() {
        let base = "new line.l bus1=sourcebus bus2=b r1=0.1 x1=0.2\nnew load.ld bus1=b kw=10\nnew capacitor.c bus1=b kvar=300 numsteps=2\n";
        for (extra, why) in [
            (
                "new capcontrol.x element=line.l capacitor=c type=pf\n",
                "type `pf` is not modelled",
            ),
            (
                "new capcontrol.x element=load.ld capacitor=c\n",
                "measuring a load is not modelled",
            ),
            (
                "new capcontrol.x element=line.l capacitor=nope\n",
                "capacitor `nope`",
            ),
            (
                "new capcontrol.x element=line.nope capacitor=c\n",
                "line `nope`",
            ),
            (
                "new capcontrol.x element=line.l capacitor=c terminal=3\n",
                "has 2 terminals",
            ),
            ("new capcontrol.x capacitor=c\n", "names no element"),
            (
                "new capcontrol.x element=line.l capacitor=c vbus=b\n",
                "`vbus`",
            ),
            (
                "new capacitor.d bus1=b numsteps=3 states=[1 0 1]\n",
                "states must close the first steps",
            ),
        ] {
            let e = import(&format!("{HEAD}{base}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("case.dss:5") && e.contains(why), "{extra}: {e}");
        }
        let c = import(&format!(
            "{HEAD}{base}new capcontrol.x element=line.l terminal=2 capacitor=c type=current onsetting=50 offsetting=20 delay=30 delayoff=5 ctphase=max voltoverride=yes vmin=110 vmax=128\n"
        ))
        .unwrap();
        let cc = &c.cap_controls[0];
        assert_eq!(
            (cc.capacitor, cc.terminal, cc.kind),
            (0, 1, CapControlKind::Current)
        );
        assert_eq!(
            (cc.on, cc.off, cc.delay_on_s, cc.delay_off_s),
            (50.0, 20.0, 30.0, 5.0)
        );
        assert_eq!(cc.ct_phase, PhaseChoice::Max);
        assert_eq!(cc.voltage_override, Some((110.0, 128.0)));
        assert_eq!((c.capacitors[0].steps, c.capacitors[0].in_service), (2, 2));
    }

    /// Each mistake is named with its file and line, and nothing is dropped.
    #[test]
    fn mistakes_are_named_where_they_were_written() {
        let cases = [
            (
                "new line.a bus1=sourcebus bus2=b linecode=nope\n",
                "case.dss:2",
                "line code `nope`",
            ),
            (
                "new line.a bus1=sourcebus bus2=b length=x\n",
                "case.dss:2",
                "not a number",
            ),
            (
                "new line.a bus1=sourcebus bus2=b geometry=g\n",
                "case.dss:2",
                "`geometry`",
            ),
            (
                "new load.a bus1=sourcebus.1 phases=1 kv=7.2 kw=5 model=3\n",
                "case.dss:2",
                "load model 3",
            ),
            (
                "new load.a bus1=sourcebus.x phases=1 kv=7.2\n",
                "case.dss:2",
                "not a node number",
            ),
            (
                "new load.a bus1=sourcebus.1 phases=1 kv=7.2 pf=1.5\n",
                "case.dss:2",
                "pf must be",
            ),
            (
                "new load.a bus1=sourcebus.1 yearly=missing\n",
                "case.dss:2",
                "load shape `missing`",
            ),
            (
                "new transformer.t windings=2 buses=[sourcebus b c]\n",
                "case.dss:2",
                "3 values for 2 windings",
            ),
            (
                "new transformer.t windings=2 buses=[sourcebus b] conns=[star delta]\n",
                "case.dss:2",
                "not a connection",
            ),
            (
                "new regcontrol.r transformer=none\n",
                "case.dss:2",
                "transformer `none`",
            ),
            (
                "new loadshape.s npts=2 mult=(file=absent.txt)\n",
                "case.dss:2",
                "absent.txt",
            ),
            (
                "new linecode.l nphases=2 rmatrix=(1 | 0 1 | 0 0 1)\n",
                "case.dss:2",
                "the code has 2 phases",
            ),
            ("set mode=harmonic\n", "case.dss:2", "mode `harmonic`"),
            ("set frequency=60\n", "case.dss:2", "`Set frequency`"),
            (
                "new generator.g bus1=sourcebus kw=5 model=3\n",
                "case.dss:2",
                "generator model 1",
            ),
        ];
        for (text, at, what) in cases {
            let err = import(&format!("{HEAD}{text}")).unwrap_err().to_string();
            assert!(err.contains(at) && err.contains(what), "{text:?}: {err}");
        }
        assert!(matches!(
            Circuit::from_dss(
                &dss::parse("set voltagebases=[1]\n", Path::new("/x/a.dss")).unwrap()
            ),
            Err(ImportError::NoCircuit)
        ));
    }

    /// OpenDSS's defaults and side effects: a switch's impedance, a code's units against the
    /// line's, a winding's kVA passed to the others, %loadloss split over two windings, a
    /// capacitor grounded on its own bus.
    #[test]
    fn defaults_and_side_effects_are_opendss_s() {
        let c = import(&format!(
            "{HEAD}new linecode.km nphases=3 r1=0.5 x1=0.4 r0=1 x0=1.2 c1=0 c0=0 units=km\nnew line.a bus1=sourcebus bus2=b linecode=km length=500 units=m\nnew line.s bus1=b bus2=c switch=y r1=1e-4 r0=1e-4 x1=0 x0=0 c1=0 c0=0\nnew transformer.t phases=1 windings=2 buses=[c.2 d.1] kvs=[7.2 0.24] kva=50 %loadloss=1 xhl=2\nnew capacitor.k bus1=d.1 phases=1 kvar=10 kv=0.24\nset voltagebases=[12.47 0.416]\ncalcv\n"
        ))
        .unwrap();
        // Half a km of the code: Zs = (2 Z1 + Z0)/3 per km.
        let z = c.lines[0].z_series_ohm[0];
        assert!((z.re - 0.5 * (2.0 * 0.5 + 1.0) / 3.0).abs() < 1e-12);
        assert!((z.im - 0.5 * (2.0 * 0.4 + 1.2) / 3.0).abs() < 1e-12);
        // The switch: 1e-4 ohm per unit length over 0.001, no reactance, no charging.
        assert!((c.lines[1].z_series_ohm[0].re - 1e-7).abs() < 1e-18);
        assert_eq!(c.lines[1].y_shunt_s[0], c64::new(0.0, 0.0));
        let t = &c.transformers[0];
        assert_eq!((t.windings[0].kva, t.windings[1].kva), (50.0, 50.0));
        assert_eq!((t.windings[0].r_pu, t.windings[1].r_pu), (0.005, 0.005));
        assert_eq!(t.windings[1].terminal.nodes, [1, 0]);
        let k = &c.capacitors[0];
        assert_eq!(c.buses[k.terminal2.bus].name, "d");
        assert_eq!(k.terminal2.nodes, [0]);
        // Bases: 12.47 kV at the source and its lateral, 0.416 kV behind the transformer.
        let base = |b: &str| c.buses[c.bus(b).unwrap()].kv_base_ln;
        assert!((base("c") - 12.47 / 3f64.sqrt()).abs() < 1e-12);
        assert!((base("d") - 0.416 / 3f64.sqrt()).abs() < 1e-12);
    }
}
