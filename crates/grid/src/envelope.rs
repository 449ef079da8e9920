//! Dynamic operating envelopes: how much more each connection point (a home) may import or export
//! in a slot without driving any bus outside its voltage band or any line or the transformer over
//! its rating, given the forecast injections.
//!
//! The rule, for a radial feeder:
//!
//! 1. Solve the base case (the forecast) with the sweep.
//! 2. Linearise around it (DistFlow at unity power factor): an extra `ΔP` at connection `j` changes
//!    the flow of every branch on `j`'s path to the transformer by `ΔP`, and the voltage of bus
//!    `i` by `-R(i,j) ΔP` where `R(i,j)` is the resistance the two paths share.
//! 3. Share every limit's headroom equally among the connections it constrains: a branch `k` with
//!    rating `S` carrying `P + jQ` gives each of the `n_k` connections below it
//!    `(sqrt(S² - Q²) - P) / n_k` of import (`+ P` for export); a bus `i` with `V_i - Vmin` of
//!    headroom gives `(V_i - Vmin) / Σ_k∈path(i) r_k n_k` to every connection whose path shares a
//!    branch with `i`'s. A connection's envelope is the smallest share of all the limits it
//!    affects, less a margin. Because flows and voltages are monotone in the injections, the two
//!    corners (everyone at their import limit, everyone at their export limit) are the worst
//!    cases of every combination inside the envelopes.
//! 4. Verify both corners with the full AC power flow; if a corner still violates a limit (the
//!    linearisation ignores losses), shrink that direction's envelopes by 10 % and verify again.
//!
//! Cost: O(buses) for the sensitivities plus a few sweeps, so a feeder of thousands of homes gets
//! its envelopes in milliseconds per slot.

use crate::network::{BusKind, Network};
use crate::powerflow::{PowerFlow, PowerFlowOptions};
use crate::sweep::{RadialFeeder, SweepError};

/// Settings of the envelope calculation.
#[derive(Clone, Copy, Debug)]
pub struct EnvelopeOptions {
    /// Share of every headroom held back (0.05: envelopes use 95 % of it).
    pub margin: f64,
    /// Verification rounds before giving up.
    pub max_rounds: usize,
}

impl Default for EnvelopeOptions {
    fn default() -> Self {
        EnvelopeOptions {
            margin: 0.05,
            max_rounds: 12,
        }
    }
}

/// Which limit binds a connection's envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The rating of this branch (index into [`Network::branches`]).
    Thermal { branch: usize },
    /// The voltage band of this bus (index into [`Network::buses`]).
    Voltage { bus: usize },
    /// Nothing on the feeder limits it.
    None,
}

/// One connection point's envelope for the slot, in addition to its forecast.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Envelope {
    pub import_mw: f64,
    pub export_mw: f64,
    pub import_binding: Binding,
    pub export_binding: Binding,
}

impl Envelope {
    /// The envelope as energy over a slot of `slot_minutes`, in mWh, rounded down (see
    /// [`slot_energy_mwh`]).
    pub fn energy_mwh(&self, slot_minutes: u32) -> (u64, u64) {
        (
            slot_energy_mwh(self.import_mw, slot_minutes),
            slot_energy_mwh(self.export_mw, slot_minutes),
        )
    }
}

/// A power held for a slot of `slot_minutes`, as energy in mWh rounded down: the one function by
/// which envelopes' floats enter the market (and the ledger) as integers.
pub fn slot_energy_mwh(power_mw: f64, slot_minutes: u32) -> u64 {
    (power_mw * 1e9 * f64::from(slot_minutes) / 60.0)
        .floor()
        .max(0.0) as u64
}

/// The envelopes of every connection, with the base case and the verified corners.
#[derive(Clone, Debug)]
pub struct Envelopes {
    /// Per connection, in the order given.
    pub connections: Vec<Envelope>,
    pub base: PowerFlow,
    /// Everyone at the import limit, and everyone at the export limit.
    pub import_corner: PowerFlow,
    pub export_corner: PowerFlow,
    /// Shrinking rounds the verification needed per direction.
    pub rounds: (usize, usize),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    #[error(transparent)]
    Sweep(#[from] SweepError),
    #[error("connection {0} names bus index {1}, which is not a load bus of the feeder")]
    BadConnection(usize, usize),
    #[error("the forecast already violates a limit ({0}): no envelope can be given until it is resolved")]
    BaseCaseViolates(String),
    #[error("the {0} envelopes still violate a limit after {1} rounds")]
    NotVerified(&'static str, usize),
}

/// A limit a power flow violates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Violation {
    /// A bus (index into [`Network::buses`]) outside its voltage band.
    Voltage {
        bus: usize,
        vm_pu: f64,
        vmin_pu: f64,
        vmax_pu: f64,
    },
    /// A branch (index into [`Network::branches`]) over its rating.
    Thermal {
        branch: usize,
        flow_mva: f64,
        rating_mva: f64,
    },
}

impl Violation {
    /// Described with the names `name(bus index)` gives the buses.
    pub fn describe(&self, net: &Network, name: impl Fn(usize) -> String) -> String {
        match *self {
            Violation::Voltage {
                bus,
                vm_pu,
                vmin_pu,
                vmax_pu,
            } => format!(
                "bus {} at {vm_pu:.4} pu outside [{vmin_pu}, {vmax_pu}]",
                name(bus)
            ),
            Violation::Thermal {
                branch,
                flow_mva,
                rating_mva,
            } => {
                let br = &net.branches[branch];
                format!(
                    "branch {}-{} carries {flow_mva:.4} MVA of {rating_mva:.4} ({:.0}%)",
                    name(br.from),
                    name(br.to),
                    100.0 * flow_mva / rating_mva
                )
            }
        }
    }
}

/// Every limit a power flow violates: buses outside their band, then branches over their rating.
pub fn violations(net: &Network, pf: &PowerFlow) -> Vec<Violation> {
    const TOL: f64 = 1e-9;
    let mut out = Vec::new();
    for (i, b) in net.buses.iter().enumerate() {
        if b.kind == BusKind::Isolated || b.kind == BusKind::Slack {
            continue;
        }
        if pf.vm_pu[i] < b.vmin_pu - TOL || pf.vm_pu[i] > b.vmax_pu + TOL {
            out.push(Violation::Voltage {
                bus: i,
                vm_pu: pf.vm_pu[i],
                vmin_pu: b.vmin_pu,
                vmax_pu: b.vmax_pu,
            });
        }
    }
    for (k, br) in net.branches.iter().enumerate() {
        let flow = pf.branches[k].max_mva();
        if br.in_service && br.rate_a_mva > 0.0 && flow > br.rate_a_mva * (1.0 + TOL) {
            out.push(Violation::Thermal {
                branch: k,
                flow_mva: flow,
                rating_mva: br.rate_a_mva,
            });
        }
    }
    out
}

/// The first limit a power flow violates, described with bus numbers; None if it violates none.
pub fn first_violation(net: &Network, pf: &PowerFlow) -> Option<String> {
    violations(net, pf)
        .first()
        .map(|v| v.describe(net, |i| net.buses[i].number.to_string()))
}

/// Computes the envelopes of the connections at buses `connections` (indices into
/// [`Network::buses`]; a bus may appear once per home on it) around the forecast `net` holds.
pub fn operating_envelopes(
    net: &Network,
    connections: &[usize],
    opts: &EnvelopeOptions,
) -> Result<Envelopes, EnvelopeError> {
    let feeder = RadialFeeder::new(net)?;
    for (c, &b) in connections.iter().enumerate() {
        if b >= net.buses.len() || net.buses[b].kind != BusKind::Pq {
            return Err(EnvelopeError::BadConnection(c, b));
        }
    }
    let pf_opts = PowerFlowOptions::default();
    let base = feeder.solve(net, &pf_opts)?;
    if let Some(v) = first_violation(net, &base) {
        return Err(EnvelopeError::BaseCaseViolates(v));
    }
    let n = net.buses.len();
    let order = feeder.order();
    // Connections at or below every bus.
    let mut below = vec![0usize; n];
    for &b in connections {
        below[b] += 1;
    }
    for &i in order[1..].iter().rev() {
        let (p, _, _) = feeder.parent(i).expect("non-slack buses have a parent");
        below[p] += below[i];
    }
    let keep = 1.0 - opts.margin;
    // Per bus, from the slack outwards: the smallest thermal share on its path (import, export),
    // the resistance sum D_i, and the first-level subtree it belongs to.
    let inf = (f64::INFINITY, Binding::None);
    let mut thermal = vec![(inf, inf); n];
    let mut d = vec![0.0f64; n];
    let mut top = vec![usize::MAX; n];
    for &i in &order[1..] {
        let (p, k, reversed) = feeder.parent(i).expect("non-slack buses have a parent");
        let br = &net.branches[k];
        let f = &base.branches[k];
        let (flow_p, flow_q) = if reversed {
            (f.p_to_mw, f.q_to_mvar)
        } else {
            (f.p_from_mw, f.q_from_mvar)
        };
        let mut here = thermal[p];
        if br.rate_a_mva > 0.0 && below[i] > 0 {
            let p_max = (br.rate_a_mva.powi(2) - flow_q.powi(2)).max(0.0).sqrt();
            let share = |h: f64| (h.max(0.0) * keep) / below[i] as f64;
            let imp = share(p_max - flow_p);
            let exp = share(p_max + flow_p);
            if imp < here.0 .0 {
                here.0 = (imp, Binding::Thermal { branch: k });
            }
            if exp < here.1 .0 {
                here.1 = (exp, Binding::Thermal { branch: k });
            }
        }
        thermal[i] = here;
        d[i] = d[p] + br.r_pu * below[i] as f64;
        top[i] = if p == feeder.slack() { i } else { top[p] };
    }
    // Voltage shares, the smallest per first-level subtree.
    let mut voltage = vec![(inf, inf); n];
    for &i in &order[1..] {
        if d[i] <= 0.0 {
            continue;
        }
        let b = &net.buses[i];
        let imp = ((base.vm_pu[i] - b.vmin_pu).max(0.0) * keep) * net.base_mva / d[i];
        let exp = ((b.vmax_pu - base.vm_pu[i]).max(0.0) * keep) * net.base_mva / d[i];
        let t = &mut voltage[top[i]];
        if imp < t.0 .0 {
            t.0 = (imp, Binding::Voltage { bus: i });
        }
        if exp < t.1 .0 {
            t.1 = (exp, Binding::Voltage { bus: i });
        }
    }
    let mut envelopes: Vec<Envelope> = connections
        .iter()
        .map(|&b| {
            let (ti, te) = thermal[b];
            let (vi, ve) = voltage[top[b]];
            let (imp, ib) = if vi.0 < ti.0 { vi } else { ti };
            let (exp, eb) = if ve.0 < te.0 { ve } else { te };
            Envelope {
                import_mw: if imp.is_finite() { imp } else { f64::MAX },
                export_mw: if exp.is_finite() { exp } else { f64::MAX },
                import_binding: ib,
                export_binding: eb,
            }
        })
        .collect();
    // Verify the corners with the full power flow.
    let corner =
        |import: bool, envelopes: &mut [Envelope]| -> Result<(PowerFlow, usize), EnvelopeError> {
            for round in 0..=opts.max_rounds {
                let mut case = net.clone();
                for (e, &b) in envelopes.iter().zip(connections) {
                    let mw = if import { e.import_mw } else { -e.export_mw };
                    if mw.abs() < f64::MAX / 2.0 {
                        case.buses[b].load_mw += mw;
                    }
                }
                let ok = match feeder.solve(&case, &pf_opts) {
                    Ok(pf) if first_violation(&case, &pf).is_none() => return Ok((pf, round)),
                    Ok(_) | Err(SweepError::Diverged { .. }) => false,
                    Err(e) => return Err(e.into()),
                };
                debug_assert!(!ok);
                for e in envelopes.iter_mut() {
                    if import {
                        e.import_mw *= 0.9;
                    } else {
                        e.export_mw *= 0.9;
                    }
                }
            }
            Err(EnvelopeError::NotVerified(
                if import { "import" } else { "export" },
                opts.max_rounds,
            ))
        };
    let (import_corner, ri) = corner(true, &mut envelopes)?;
    let (export_corner, re) = corner(false, &mut envelopes)?;
    Ok(Envelopes {
        connections: envelopes,
        base,
        import_corner,
        export_corner,
        rounds: (ri, re),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeder::Feeder;

    /// Two streets of `homes` each under a `kva` transformer, 1 kW of forecast per home.
    pub(crate) fn two_streets(homes: usize, kva: f64) -> Feeder {
        let mut t = format!(
            "vmin_pu = 0.94\nvmax_pu = 1.06\n[transformer]\nrating_kva = {kva}\nr_pu = 0.01\nx_pu = 0.04\n"
        );
        for s in 0..2 {
            for h in 0..homes {
                t += &format!("[[buses]]\nname = \"s{s}h{h}\"\nload_kw = 1.0\nload_kvar = 0.2\n");
            }
        }
        for s in 0..2 {
            for h in 0..homes {
                let from = if h == 0 {
                    "lv".to_string()
                } else {
                    format!("s{s}h{}", h - 1)
                };
                t += &format!("[[lines]]\nfrom = \"{from}\"\nto = \"s{s}h{h}\"\nr_ohm = 0.01\nx_ohm = 0.005\nampacity_a = 300.0\n");
            }
        }
        Feeder::from_toml(&t).unwrap()
    }

    #[test]
    fn envelopes_keep_both_corners_within_every_limit() {
        let f = two_streets(10, 100.0);
        let homes: Vec<usize> = (2..f.network.buses.len()).collect();
        let env = operating_envelopes(&f.network, &homes, &EnvelopeOptions::default()).unwrap();
        assert!(first_violation(&f.network, &env.import_corner).is_none());
        assert!(first_violation(&f.network, &env.export_corner).is_none());
        // The transformer (100 kVA, ~20 kW of forecast) binds the import of 20 homes: about
        // (100 - 20) * 0.95 / 20 = 3.8 kW each; the corner uses most of the rating.
        let e = env.connections[0];
        assert_eq!(e.import_binding, Binding::Thermal { branch: 0 });
        assert!(
            e.import_mw > 0.0030 && e.import_mw < 0.0040,
            "{}",
            e.import_mw
        );
        let loading = env.import_corner.branches[0].max_mva() / 0.1;
        assert!(loading > 0.85 && loading <= 1.0, "{loading}");
        // Energy per 15-minute slot, floored to mWh.
        let (imp, _) = e.energy_mwh(15);
        assert_eq!(imp, (e.import_mw * 1e9 / 4.0).floor() as u64);
    }

    #[test]
    fn a_long_weak_street_is_bound_by_voltage() {
        let mut f = two_streets(30, 1000.0);
        for br in &mut f.network.branches[1..] {
            br.r_pu *= 1.5;
        }
        let homes: Vec<usize> = (2..f.network.buses.len()).collect();
        let env = operating_envelopes(&f.network, &homes, &EnvelopeOptions::default()).unwrap();
        assert!(matches!(
            env.connections[0].import_binding,
            Binding::Voltage { .. }
        ));
        assert!(first_violation(&f.network, &env.import_corner).is_none());
        // The corner drives the weakest bus close to its 0.94 pu floor.
        let (_, vmin) = env.import_corner.min_voltage();
        assert!((0.94 - 1e-9..0.96).contains(&vmin), "{vmin}");
    }

    #[test]
    fn a_violated_forecast_and_bad_connections_are_errors() {
        let f = two_streets(10, 10.0); // 20 kW of load on a 10 kVA transformer
        let homes: Vec<usize> = (2..f.network.buses.len()).collect();
        assert!(matches!(
            operating_envelopes(&f.network, &homes, &EnvelopeOptions::default()),
            Err(EnvelopeError::BaseCaseViolates(_))
        ));
        let f = two_streets(2, 100.0);
        assert!(matches!(
            operating_envelopes(&f.network, &[0], &EnvelopeOptions::default()),
            Err(EnvelopeError::BadConnection(0, 0))
        ));
    }
}
