//! Hosting capacity: per bus and phase, the most PV (a single-phase generator at unity power
//! factor between the phase and ground) the feeder takes before any limit binds: a node's
//! voltage outside its band, a bus's unbalance, a line's current over its rating or a
//! transformer over its kVA. Found by bisection on power flows with the regulators' taps where
//! the case without the PV leaves them.

use faer::c64;

use super::solve::System;
use super::{Circuit, SolveError, SolveOptions};

/// The limits and the search's resolution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostingOptions {
    pub vmin_pu: f64,
    pub vmax_pu: f64,
    pub unbalance_max_pct: f64,
    /// Lines' currents against their rating and transformers' against their kVA.
    pub thermal: bool,
    /// The answer is within this of the most that fits.
    pub resolution_kw: f64,
    /// No search goes beyond this.
    pub max_kw: f64,
    /// Every bus's phases, not only where loads (homes) are.
    pub all_buses: bool,
}

impl Default for HostingOptions {
    fn default() -> Self {
        HostingOptions {
            vmin_pu: super::solve::VOLTAGE_MIN_PU,
            vmax_pu: super::solve::VOLTAGE_MAX_PU,
            unbalance_max_pct: super::solve::UNBALANCE_MAX_PCT,
            thermal: true,
            resolution_kw: 0.1,
            max_kw: 10_000.0,
            all_buses: false,
        }
    }
}

/// The limit that binds first (as JSON: `{"kind": "overvoltage", "bus": …}`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Limit {
    Overvoltage {
        bus: String,
        node: u8,
        vm_pu: f64,
    },
    Undervoltage {
        bus: String,
        node: u8,
        vm_pu: f64,
    },
    Unbalance {
        bus: String,
        pct: f64,
    },
    Line {
        line: String,
        current_a: f64,
        rating_a: f64,
    },
    Transformer {
        transformer: String,
        loading_pct: f64,
    },
    /// The power flow found no solution (voltage collapse).
    NoSolution,
    /// [`HostingOptions::max_kw`] fits.
    Ceiling,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Overvoltage { bus, node, vm_pu } => {
                write!(f, "overvoltage at {bus}.{node} ({vm_pu:.3} pu)")
            }
            Limit::Undervoltage { bus, node, vm_pu } => {
                write!(f, "undervoltage at {bus}.{node} ({vm_pu:.3} pu)")
            }
            Limit::Unbalance { bus, pct } => write!(f, "unbalance at {bus} ({pct:.2} %)"),
            Limit::Line {
                line,
                current_a,
                rating_a,
            } => write!(f, "line {line} at {current_a:.0} A of {rating_a:.0} A"),
            Limit::Transformer {
                transformer,
                loading_pct,
            } => write!(f, "transformer {transformer} at {loading_pct:.0} %"),
            Limit::NoSolution => write!(f, "no power flow solution"),
            Limit::Ceiling => write!(f, "the search's ceiling"),
        }
    }
}

/// The hosting capacity at one bus and phase.
#[derive(Clone, Debug, PartialEq)]
pub struct Hosting {
    pub bus: String,
    pub node: u8,
    pub kw: f64,
    /// What binds just above `kw` (for `kw` 0: what the case already violates).
    pub limit: Limit,
}

impl System<'_> {
    /// The first limit the voltages `v` break, if any.
    pub(crate) fn first_limit(&self, v: &[c64], opts: &HostingOptions) -> Option<Limit> {
        let circuit = self.circuit;
        let mut phases: Vec<[Option<c64>; 3]> = vec![[None; 3]; circuit.buses.len()];
        for (k, &(b, n)) in self.nodes.iter().enumerate() {
            if !(1..=3).contains(&n) || self.base_v[k] <= 0.0 {
                continue;
            }
            phases[b][n as usize - 1] = Some(v[k]);
            let vm = v[k].norm() / self.base_v[k];
            let bus = circuit.buses[b].name.clone();
            if vm > opts.vmax_pu {
                return Some(Limit::Overvoltage {
                    bus,
                    node: n,
                    vm_pu: vm,
                });
            }
            if vm < opts.vmin_pu {
                return Some(Limit::Undervoltage {
                    bus,
                    node: n,
                    vm_pu: vm,
                });
            }
        }
        for (b, p) in phases.iter().enumerate() {
            if let [Some(a), Some(bb), Some(c)] = p {
                let pct = super::solve::unbalance_pct(*a, *bb, *c);
                if pct > opts.unbalance_max_pct {
                    return Some(Limit::Unbalance {
                        bus: circuit.buses[b].name.clone(),
                        pct,
                    });
                }
            }
        }
        if opts.thermal {
            for (line, current_a) in circuit.lines.iter().zip(self.line_currents(v)) {
                if line.rating_a > 0.0 && current_a > line.rating_a {
                    return Some(Limit::Line {
                        line: line.name.clone(),
                        current_a,
                        rating_a: line.rating_a,
                    });
                }
            }
            for (t, loading_pct) in circuit.transformers.iter().zip(self.transformer_loading(v)) {
                if loading_pct > 100.0 {
                    return Some(Limit::Transformer {
                        transformer: t.name.clone(),
                        loading_pct,
                    });
                }
            }
        }
        None
    }
}

impl Circuit {
    /// The hosting capacity of every load bus's phases (every bus's with
    /// [`HostingOptions::all_buses`]), the loads as the circuit has them.
    pub fn hosting_capacity(
        &self,
        solve: &SolveOptions,
        opts: &HostingOptions,
    ) -> Result<Vec<Hosting>, SolveError> {
        let mut system = System::new(self, false);
        let (base, _, _) = system.solve_with_controls(solve)?;
        let source_buses: Vec<usize> = self.sources.iter().map(|s| s.terminal.bus).collect();
        let mut candidates: Vec<(usize, u8)> = if opts.all_buses {
            system
                .nodes
                .iter()
                .copied()
                .filter(|&(b, n)| (1..=3).contains(&n) && !source_buses.contains(&b))
                .collect()
        } else {
            self.loads
                .iter()
                .flat_map(|l| {
                    l.terminal
                        .nodes
                        .iter()
                        .filter(|n| (1..=3).contains(*n))
                        .map(move |&n| (l.terminal.bus, n))
                })
                .collect()
        };
        candidates.retain(|&(b, _)| self.buses[b].kv_base_ln > 0.0);
        candidates.sort_unstable();
        candidates.dedup();
        let mut out = Vec::with_capacity(candidates.len());
        let base_limit = system.first_limit(&base, opts);
        for (bus, node) in candidates {
            let name = self.buses[bus].name.clone();
            if let Some(limit) = &base_limit {
                out.push(Hosting {
                    bus: name,
                    node,
                    kw: 0.0,
                    limit: limit.clone(),
                });
                continue;
            }
            let g = system.add_generator(bus, node);
            let eval = |system: &mut System, kw: f64| -> Option<Limit> {
                system.set_generation(g, kw);
                let mut v = base.clone();
                match system.solve_fixed_point(&mut v, solve) {
                    Ok(_) => system.first_limit(&v, opts),
                    Err(_) => Some(Limit::NoSolution),
                }
            };
            let (mut lo, mut hi) = (0.0, opts.resolution_kw.max(1.0) * 10.0);
            let mut limit = Limit::Ceiling;
            loop {
                match eval(&mut system, hi) {
                    None if hi >= opts.max_kw => {
                        lo = opts.max_kw;
                        break;
                    }
                    None => {
                        lo = hi;
                        hi = (hi * 2.0).min(opts.max_kw);
                    }
                    Some(l) => {
                        limit = l;
                        break;
                    }
                }
            }
            if limit != Limit::Ceiling {
                while hi - lo > opts.resolution_kw {
                    let mid = 0.5 * (lo + hi);
                    match eval(&mut system, mid) {
                        None => lo = mid,
                        Some(l) => {
                            hi = mid;
                            limit = l;
                        }
                    }
                }
            }
            system.remove_generator(g);
            out.push(Hosting {
                bus: name,
                node,
                kw: lo,
                limit,
            });
        }
        Ok(out)
    }
}
