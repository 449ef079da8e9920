//! A community feeder described in TOML (the `[feeder]` table of a scenario): the point of common
//! coupling, the distribution transformer, named buses where homes sit, and the cables between
//! them, in the units a distribution engineer writes down (kV, kVA, ohms, amperes).
//!
//! ```toml
//! name = "elm-street"
//! mv_kv = 20.0            # upstream side of the transformer (the PCC, the slack bus "pcc")
//! lv_kv = 0.4             # the low-voltage busbar "lv" and everything below it
//! vmin_pu = 0.94          # voltage band of every bus unless a bus says otherwise
//! vmax_pu = 1.06
//!
//! [transformer]           # between "pcc" and "lv"
//! rating_kva = 250.0
//! r_pu = 0.01             # on the transformer's own rating
//! x_pu = 0.04
//!
//! [[buses]]
//! name = "home-1"
//! load_kw = 1.2           # background (forecast) load; the market adds to it
//! load_kvar = 0.3
//!
//! [[lines]]
//! from = "lv"
//! to = "home-1"
//! r_ohm = 0.03
//! x_ohm = 0.01
//! ampacity_a = 200.0      # rating; omit for unlimited
//! closed = true           # a switch on the line; false leaves it open
//! ```
//!
//! A bus may also carry `generation_kw` / `generation_kvar` (PV at a load bus, not voltage
//! controlled).
//!
//! Bus numbers in reports: `pcc` is 1, `lv` is 2, the listed buses 3, 4, ... in order. The
//! network is built on a 1 MVA base.

use std::collections::HashMap;

use serde::Deserialize;

use crate::network::{Branch, Bus, BusKind, Generator, Network};

/// The largest feeder a TOML file may describe.
pub const MAX_FEEDER_BUSES: usize = 100_000;

fn default_mv_kv() -> f64 {
    20.0
}
fn default_lv_kv() -> f64 {
    0.4
}
fn default_vmin() -> f64 {
    0.9
}
fn default_vmax() -> f64 {
    1.1
}
fn one() -> f64 {
    1.0
}

/// The `[feeder]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeederSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_mv_kv")]
    pub mv_kv: f64,
    #[serde(default = "default_lv_kv")]
    pub lv_kv: f64,
    /// Voltage the upstream grid holds at the PCC.
    #[serde(default = "one")]
    pub pcc_vm_pu: f64,
    #[serde(default = "default_vmin")]
    pub vmin_pu: f64,
    #[serde(default = "default_vmax")]
    pub vmax_pu: f64,
    pub transformer: TransformerSpec,
    #[serde(default)]
    pub buses: Vec<BusSpec>,
    pub lines: Vec<LineSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerSpec {
    pub rating_kva: f64,
    /// Resistance and reactance in per unit of the transformer's own rating.
    pub r_pu: f64,
    pub x_pu: f64,
    /// Off-nominal turns ratio at the PCC side.
    #[serde(default = "one")]
    pub tap: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSpec {
    pub name: String,
    #[serde(default)]
    pub load_kw: f64,
    #[serde(default)]
    pub load_kvar: f64,
    /// Generation at the bus (PV), kW and kvar: a generator at a load bus (not voltage
    /// controlled).
    #[serde(default)]
    pub generation_kw: f64,
    #[serde(default)]
    pub generation_kvar: f64,
    pub vmin_pu: Option<f64>,
    pub vmax_pu: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    pub from: String,
    pub to: String,
    pub r_ohm: f64,
    pub x_ohm: f64,
    /// Thermal rating; omitted means unlimited.
    pub ampacity_a: Option<f64>,
    /// A switch on the line: `false` leaves it open (a normally-open tie, or a section isolated).
    #[serde(default = "yes")]
    pub closed: bool,
}

fn yes() -> bool {
    true
}

/// What is wrong with a feeder description.
#[derive(Debug, thiserror::Error)]
pub enum FeederError {
    #[error("feeder TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("bus name {0:?} is used twice (\"pcc\" and \"lv\" are the transformer's buses)")]
    DuplicateBus(String),
    #[error("line {line}: bus {name:?} is not declared in [[buses]]")]
    UnknownBus { line: usize, name: String },
    #[error("{what} must be {rule}, not {value}")]
    Invalid {
        what: String,
        rule: &'static str,
        value: f64,
    },
    #[error("line {0}: r_ohm and x_ohm are both zero")]
    ZeroImpedance(usize),
    #[error("the feeder has {0} buses; at most {MAX_FEEDER_BUSES}")]
    TooLarge(usize),
}

/// A feeder built from its description: the network and the names of its buses.
#[derive(Clone, Debug)]
pub struct Feeder {
    pub network: Network,
    /// Per bus (in [`Network::buses`] order), its name.
    pub names: Vec<String>,
    /// The transformer's branch index.
    pub transformer: usize,
}

impl Feeder {
    /// Parses and builds a feeder from the TOML text of its table.
    pub fn from_toml(text: &str) -> Result<Feeder, FeederError> {
        let spec: FeederSpec = toml::from_str(text)?;
        spec.build()
    }

    /// The index of the bus with this name.
    pub fn bus(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

fn check(
    what: impl Into<String>,
    value: f64,
    ok: bool,
    rule: &'static str,
) -> Result<(), FeederError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(FeederError::Invalid {
            what: what.into(),
            rule,
            value,
        })
    }
}

impl FeederSpec {
    /// Validates the description and builds the network. Every problem is named.
    pub fn build(&self) -> Result<Feeder, FeederError> {
        const BASE_MVA: f64 = 1.0;
        check("mv_kv", self.mv_kv, self.mv_kv > 0.0, "positive")?;
        check("lv_kv", self.lv_kv, self.lv_kv > 0.0, "positive")?;
        check(
            "pcc_vm_pu",
            self.pcc_vm_pu,
            (0.8..=1.2).contains(&self.pcc_vm_pu),
            "within 0.8..1.2",
        )?;
        check(
            "vmin_pu",
            self.vmin_pu,
            self.vmin_pu > 0.0 && self.vmin_pu < self.vmax_pu,
            "positive and below vmax_pu",
        )?;
        let t = &self.transformer;
        check(
            "transformer.rating_kva",
            t.rating_kva,
            t.rating_kva > 0.0,
            "positive",
        )?;
        check("transformer.r_pu", t.r_pu, t.r_pu >= 0.0, "non-negative")?;
        check("transformer.x_pu", t.x_pu, t.x_pu > 0.0, "positive")?;
        check(
            "transformer.tap",
            t.tap,
            (0.8..=1.2).contains(&t.tap),
            "within 0.8..1.2",
        )?;
        if self.buses.len() + 2 > MAX_FEEDER_BUSES {
            return Err(FeederError::TooLarge(self.buses.len() + 2));
        }
        let bus = |number: u32,
                   kind: BusKind,
                   kv: f64,
                   load_kw: f64,
                   load_kvar: f64,
                   vmin: f64,
                   vmax: f64| Bus {
            number,
            kind,
            load_mw: load_kw / 1000.0,
            load_mvar: load_kvar / 1000.0,
            shunt_mw: 0.0,
            shunt_mvar: 0.0,
            vm_pu: 1.0,
            va_deg: 0.0,
            base_kv: kv,
            vmax_pu: vmax,
            vmin_pu: vmin,
        };
        let mut names = vec!["pcc".to_string(), "lv".to_string()];
        let mut buses = vec![
            bus(
                1,
                BusKind::Slack,
                self.mv_kv,
                0.0,
                0.0,
                self.vmin_pu,
                self.vmax_pu,
            ),
            bus(
                2,
                BusKind::Pq,
                self.lv_kv,
                0.0,
                0.0,
                self.vmin_pu,
                self.vmax_pu,
            ),
        ];
        let mut index: HashMap<&str, usize> = HashMap::from([("pcc", 0), ("lv", 1)]);
        for b in &self.buses {
            if index.insert(&b.name, buses.len()).is_some() {
                return Err(FeederError::DuplicateBus(b.name.clone()));
            }
            let vmin = b.vmin_pu.unwrap_or(self.vmin_pu);
            let vmax = b.vmax_pu.unwrap_or(self.vmax_pu);
            check(
                format!("bus {:?}: vmin_pu", b.name),
                vmin,
                vmin > 0.0 && vmin < vmax,
                "positive and below vmax_pu",
            )?;
            check(
                format!("bus {:?}: load_kw", b.name),
                b.load_kw,
                true,
                "a number",
            )?;
            check(
                format!("bus {:?}: load_kvar", b.name),
                b.load_kvar,
                true,
                "a number",
            )?;
            buses.push(bus(
                buses.len() as u32 + 1,
                BusKind::Pq,
                self.lv_kv,
                b.load_kw,
                b.load_kvar,
                vmin,
                vmax,
            ));
            names.push(b.name.clone());
        }
        let scale = BASE_MVA / (t.rating_kva / 1000.0);
        let mut branches = vec![Branch {
            from: 0,
            to: 1,
            r_pu: t.r_pu * scale,
            x_pu: t.x_pu * scale,
            b_pu: 0.0,
            rate_a_mva: t.rating_kva / 1000.0,
            tap: t.tap,
            shift_deg: 0.0,
            in_service: true,
        }];
        let z_base = self.lv_kv * self.lv_kv / BASE_MVA;
        for (i, l) in self.lines.iter().enumerate() {
            let n = i + 1;
            let end = |name: &String| {
                index
                    .get(name.as_str())
                    .copied()
                    .ok_or_else(|| FeederError::UnknownBus {
                        line: n,
                        name: name.clone(),
                    })
            };
            let (from, to) = (end(&l.from)?, end(&l.to)?);
            check(
                format!("line {n}: r_ohm"),
                l.r_ohm,
                l.r_ohm >= 0.0,
                "non-negative",
            )?;
            check(
                format!("line {n}: x_ohm"),
                l.x_ohm,
                l.x_ohm >= 0.0,
                "non-negative",
            )?;
            if l.r_ohm == 0.0 && l.x_ohm == 0.0 {
                return Err(FeederError::ZeroImpedance(n));
            }
            let rate_a_mva = match l.ampacity_a {
                Some(a) => {
                    check(format!("line {n}: ampacity_a"), a, a > 0.0, "positive")?;
                    3f64.sqrt() * self.lv_kv * a / 1000.0
                }
                None => 0.0,
            };
            branches.push(Branch {
                from,
                to,
                r_pu: l.r_ohm / z_base,
                x_pu: l.x_ohm / z_base,
                b_pu: 0.0,
                rate_a_mva,
                tap: 1.0,
                shift_deg: 0.0,
                in_service: l.closed,
            });
        }
        let mut generators = vec![Generator {
            bus: 0,
            p_mw: 0.0,
            q_mvar: 0.0,
            qmax_mvar: 1e3,
            qmin_mvar: -1e3,
            vset_pu: self.pcc_vm_pu,
            in_service: true,
        }];
        for (i, b) in self.buses.iter().enumerate() {
            if b.generation_kw != 0.0 || b.generation_kvar != 0.0 {
                generators.push(Generator {
                    bus: i + 2,
                    p_mw: b.generation_kw / 1000.0,
                    q_mvar: b.generation_kvar / 1000.0,
                    qmax_mvar: 0.0,
                    qmin_mvar: 0.0,
                    vset_pu: 1.0,
                    in_service: true,
                });
            }
        }
        Ok(Feeder {
            network: Network {
                name: self.name.clone(),
                base_mva: BASE_MVA,
                buses,
                generators,
                branches,
            },
            names,
            transformer: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PowerFlowOptions, RadialFeeder};

    const STREET: &str = r#"
name = "elm-street"
vmin_pu = 0.94
vmax_pu = 1.06
[transformer]
rating_kva = 100.0
r_pu = 0.01
x_pu = 0.04
[[buses]]
name = "a"
load_kw = 10.0
[[buses]]
name = "b"
load_kw = 5.0
load_kvar = 1.0
[[lines]]
from = "lv"
to = "a"
r_ohm = 0.05
x_ohm = 0.02
ampacity_a = 100.0
[[lines]]
from = "a"
to = "b"
r_ohm = 0.05
x_ohm = 0.02
"#;

    #[test]
    fn a_street_in_toml_builds_and_solves() {
        let f = Feeder::from_toml(STREET).unwrap();
        assert_eq!(f.names, ["pcc", "lv", "a", "b"]);
        assert_eq!(f.bus("b"), Some(3));
        let net = &f.network;
        assert!((net.total_load_mw() - 0.015).abs() < 1e-12);
        assert!((net.branches[1].rate_a_mva - 3f64.sqrt() * 0.4 * 0.1).abs() < 1e-12);
        let pf = RadialFeeder::new(net)
            .unwrap()
            .solve(net, &PowerFlowOptions::default())
            .unwrap();
        // Voltage falls along the street; the transformer carries the load plus the losses.
        assert!(pf.vm_pu[3] < pf.vm_pu[2] && pf.vm_pu[2] < pf.vm_pu[1] && pf.vm_pu[1] < 1.0);
        let into = pf.branches[0].p_from_mw;
        assert!(
            (into - 0.015 - pf.losses_mw).abs() < 1e-7,
            "{into} {} {:?}",
            pf.losses_mw,
            pf.branches
        );
    }

    /// PV on a bus pushes its voltage up; an open switch cuts the bus behind it off (the sweep
    /// names it instead of solving).
    #[test]
    fn generation_and_switches() {
        let base = Feeder::from_toml(STREET).unwrap();
        let with_pv = Feeder::from_toml(&STREET.replace(
            "name = \"b\"\nload_kw = 5.0",
            "name = \"b\"\ngeneration_kw = 40.0\nload_kw = 5.0",
        ))
        .unwrap();
        assert_eq!(with_pv.network.generators.len(), 2);
        let solve = |f: &Feeder| {
            RadialFeeder::new(&f.network)
                .and_then(|r| r.solve(&f.network, &PowerFlowOptions::default()))
        };
        let (v0, v1) = (solve(&base).unwrap(), solve(&with_pv).unwrap());
        assert!(v1.vm_pu[3] > 1.0 && v1.vm_pu[3] > v0.vm_pu[3]);
        // 40 kW of PV against 15 kW of load: the transformer exports.
        assert!(v1.branches[0].p_from_mw < 0.0);
        // The last line (a to b) gets a switch, open.
        let open = Feeder::from_toml(&format!("{}\nclosed = false\n", STREET.trim_end()));
        let open = open.unwrap();
        assert!(!open.network.branches[2].in_service);
        assert_eq!(solve(&open).unwrap_err(), crate::SweepError::Unreached(4));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| Feeder::from_toml(text).unwrap_err().to_string();
        assert!(
            err(&STREET.replace("to = \"b\"", "to = \"c\"")).contains("bus \"c\" is not declared")
        );
        assert!(
            err(&STREET.replace("name = \"b\"", "name = \"a\"")).contains("\"a\" is used twice")
        );
        assert!(
            err(&STREET.replace("rating_kva = 100.0", "rating_kva = -1.0"))
                .contains("transformer.rating_kva must be positive")
        );
        assert!(
            err(&STREET.replace("ampacity_a = 100.0", "ampacity_a = 0.0"))
                .contains("line 1: ampacity_a")
        );
        assert!(err("lines = []").contains("missing field `transformer`"));
        assert!(err(&STREET.replace("load_kw = 10.0", "load_kwh = 10.0")).contains("unknown field"));
        assert!(err(&format!(
            "{STREET}\n[[lines]]\nfrom = \"a\"\nto = \"b\"\nr_ohm = 0.0\nx_ohm = 0.0\n"
        ))
        .contains("line 3: r_ohm and x_ohm are both zero"));
    }
}
