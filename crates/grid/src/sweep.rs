//! Backward/forward sweep for radial feeders: the classic distribution power flow, one pass up
//! the tree summing currents and one pass down it updating voltages, O(buses) per iteration and
//! no matrix at all.
//!
//! It solves the same equations as [`newton_raphson`](crate::newton_raphson) (MATPOWER's branch
//! model with taps, phase shifts and line charging; constant-power loads; bus shunts), so the two
//! agree to the tolerance; it converges in a handful of iterations on a well-loaded feeder. It
//! needs a tree: one slack bus (the point of common coupling), no loops among the in-service
//! branches, and no voltage-controlled (PV) buses. Generators at other buses are taken as negative
//! loads at their scheduled `p_mw`/`q_mvar`.
//!
//! [`RadialFeeder::new`] orders the tree once; [`RadialFeeder::solve`] can then be called for
//! every market slot with new loads (the branches must not change in between).

use crate::complex::C;
use crate::network::{BusKind, Network};
use crate::powerflow::{branch_admittances, finish, live_branch, PowerFlow, PowerFlowOptions};

/// Why the sweep cannot solve a network.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SweepError {
    #[error("the network has no slack bus (type 3): nothing feeds the feeder")]
    NoSlack,
    #[error("the network has {0} slack buses; a radial feeder has one point of common coupling")]
    SeveralSlacks(usize),
    #[error("branch {from}-{to} closes a loop: the sweep needs a radial feeder (use Newton-Raphson for meshed networks)")]
    Meshed { from: u32, to: u32 },
    #[error("bus {0} is not connected to the slack bus")]
    Unreached(u32),
    #[error("bus {0} controls its voltage (PV bus): the sweep handles PQ buses only (use Newton-Raphson)")]
    VoltageControlled(u32),
    #[error("the sweep did not converge in {iterations} iterations (largest mismatch {mismatch_pu:.3e} pu): the feeder is probably loaded beyond what it can carry")]
    Diverged { iterations: usize, mismatch_pu: f64 },
}

/// How a bus hangs from its parent.
#[derive(Clone, Copy, Debug)]
struct Link {
    parent: usize,
    branch: usize,
    /// Series impedance of the branch.
    z: C,
    /// Half the line charging, as an admittance (j b / 2).
    half_charging: C,
    /// Complex turns ratio of the branch's ideal transformer (1 for a line).
    tap: C,
    /// Whether the bus is the branch's `from` end (where the transformer sits).
    reversed: bool,
}

/// A radial feeder's tree, ordered from the slack bus outwards; see the module documentation.
#[derive(Clone, Debug)]
pub struct RadialFeeder {
    slack: usize,
    /// Buses reachable from the slack, in breadth-first order, the slack first.
    order: Vec<usize>,
    /// Per bus: its link to its parent (None for the slack and isolated buses).
    link: Vec<Option<Link>>,
    /// In-service branch admittances (from-from, from-to, to-from, to-to) and ends, for the
    /// mismatch check.
    admittances: Vec<(usize, usize, [C; 4])>,
}

impl RadialFeeder {
    /// Orders the feeder's tree. O(buses + branches).
    pub fn new(net: &Network) -> Result<RadialFeeder, SweepError> {
        let n = net.buses.len();
        let slacks: Vec<usize> = net.slack_buses().collect();
        let slack = match slacks.as_slice() {
            [] => return Err(SweepError::NoSlack),
            [s] => *s,
            more => return Err(SweepError::SeveralSlacks(more.len())),
        };
        for g in net.generators.iter().filter(|g| g.in_service) {
            if net.buses[g.bus].kind == BusKind::Pv {
                return Err(SweepError::VoltageControlled(net.buses[g.bus].number));
            }
        }
        let mut adjacent: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut admittances = Vec::new();
        for (k, br) in net.branches.iter().enumerate() {
            if live_branch(net, k) {
                adjacent[br.from].push(k);
                adjacent[br.to].push(k);
                let (ff, ft, tf, tt) = branch_admittances(net, k);
                admittances.push((br.from, br.to, [ff, ft, tf, tt]));
            }
        }
        let mut link: Vec<Option<Link>> = vec![None; n];
        let mut seen = vec![false; n];
        let mut used = vec![false; net.branches.len()];
        let mut order = Vec::with_capacity(n);
        seen[slack] = true;
        order.push(slack);
        let mut head = 0;
        while head < order.len() {
            let bus = order[head];
            head += 1;
            for &k in &adjacent[bus] {
                if used[k] {
                    continue;
                }
                used[k] = true;
                let br = &net.branches[k];
                let (child, reversed) = if br.from == bus {
                    (br.to, false)
                } else {
                    (br.from, true)
                };
                if seen[child] {
                    return Err(SweepError::Meshed {
                        from: net.buses[br.from].number,
                        to: net.buses[br.to].number,
                    });
                }
                seen[child] = true;
                order.push(child);
                link[child] = Some(Link {
                    parent: bus,
                    branch: k,
                    z: C::new(br.r_pu, br.x_pu),
                    half_charging: C::new(0.0, br.b_pu / 2.0),
                    tap: C::polar(br.tap, br.shift_deg.to_radians()),
                    reversed,
                });
            }
        }
        if let Some(b) = (0..n).find(|&b| !seen[b] && net.buses[b].kind != BusKind::Isolated) {
            return Err(SweepError::Unreached(net.buses[b].number));
        }
        Ok(RadialFeeder {
            slack,
            order,
            link,
            admittances,
        })
    }

    /// The slack bus (the point of common coupling).
    pub fn slack(&self) -> usize {
        self.slack
    }

    /// Buses reachable from the slack, breadth first, the slack first: every bus comes after its
    /// parent.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// A bus's parent, the branch to it, and whether the bus is that branch's `from` end; None for
    /// the slack and isolated buses.
    pub fn parent(&self, bus: usize) -> Option<(usize, usize, bool)> {
        self.link[bus].map(|l| (l.parent, l.branch, l.reversed))
    }

    /// Solves the feeder with the loads, generators and shunts `net` holds now (its branches must
    /// be those the feeder was built from). O(buses) per iteration.
    pub fn solve(&self, net: &Network, opts: &PowerFlowOptions) -> Result<PowerFlow, SweepError> {
        let n = net.buses.len();
        assert_eq!(n, self.link.len(), "solve() on another network than new()");
        let base = net.base_mva;
        // Specified consumption and shunt admittance per bus, per unit.
        let mut demand: Vec<C> = net
            .buses
            .iter()
            .map(|b| C::new(b.load_mw, b.load_mvar).scale(1.0 / base))
            .collect();
        let shunt: Vec<C> = net
            .buses
            .iter()
            .map(|b| C::new(b.shunt_mw, b.shunt_mvar).scale(1.0 / base))
            .collect();
        let mut v_slack = C::polar(
            net.buses[self.slack].vm_pu,
            net.buses[self.slack].va_deg.to_radians(),
        );
        for g in net.generators.iter().filter(|g| g.in_service) {
            if g.bus == self.slack {
                v_slack = C::polar(g.vset_pu, net.buses[self.slack].va_deg.to_radians());
            } else {
                demand[g.bus] = demand[g.bus] - C::new(g.p_mw, g.q_mvar).scale(1.0 / base);
            }
        }
        let mut v = vec![v_slack; n];
        // Per bus: the current its subtree draws at the bus, and the series current of its link.
        let mut draw = vec![C::default(); n];
        let mut series = vec![C::default(); n];
        let mut injected = vec![C::default(); n];
        let mut iterations = 0;
        loop {
            // Mismatch at the present voltages: what the branches and shunts take out of every
            // non-slack bus against what its loads should take.
            injected.iter_mut().for_each(|s| *s = C::default());
            for &(f, t, [ff, ft, tf, tt]) in &self.admittances {
                injected[f] = injected[f] + v[f] * (ff * v[f] + ft * v[t]).conj();
                injected[t] = injected[t] + v[t] * (tf * v[f] + tt * v[t]).conj();
            }
            let mut mismatch = 0.0f64;
            for &i in &self.order[1..] {
                let taken = injected[i] + v[i] * (shunt[i] * v[i]).conj();
                let m = taken + demand[i];
                mismatch = mismatch.max(m.re.abs()).max(m.im.abs());
            }
            if mismatch < opts.tolerance_pu {
                return Ok(finish(net, v, iterations, mismatch));
            }
            if iterations == opts.max_iterations || !mismatch.is_finite() {
                return Err(SweepError::Diverged {
                    iterations,
                    mismatch_pu: mismatch,
                });
            }
            iterations += 1;
            // Backward: sum currents from the leaves to the slack.
            draw.iter_mut().for_each(|d| *d = C::default());
            for &i in self.order[1..].iter().rev() {
                let link = self.link[i].expect("every ordered bus but the slack has a link");
                draw[i] = draw[i] + (demand[i] / v[i]).conj() + shunt[i] * v[i];
                let p = link.parent;
                if link.reversed {
                    // The transformer sits at this bus: the series current flows towards its
                    // inner side v/tap.
                    let inner = v[i] / link.tap;
                    series[i] = draw[i] * link.tap.conj() + link.half_charging * inner;
                    draw[p] = draw[p] + series[i] + link.half_charging * v[p];
                } else {
                    series[i] = draw[i] + link.half_charging * v[i];
                    let inner = v[p] / link.tap;
                    draw[p] = draw[p] + (series[i] + link.half_charging * inner) / link.tap.conj();
                }
            }
            // Forward: voltages from the slack outwards.
            for &i in &self.order[1..] {
                let link = self.link[i].expect("every ordered bus but the slack has a link");
                let p = link.parent;
                v[i] = if link.reversed {
                    (v[p] - link.z * series[i]) * link.tap
                } else {
                    v[p] / link.tap - link.z * series[i]
                };
            }
        }
    }
}

/// Generates a radial feeder of `buses` buses (at least 2) for benchmarks and tests: a 20 kV
/// feeder whose slack bus is the substation, each new bus hanging from one of the last 40 buses
/// (a pseudo-random but reproducible choice from `seed`), 0.5 to 1.5 kW and 0.3 kvar per bus, and
/// line segments of 0.008 + j0.006 ohm (a few tens of metres of cable). The lowest voltage of the
/// 10,000-bus feeder is near 0.95 pu.
pub fn generated_radial_feeder(buses: usize, seed: u64) -> Network {
    use crate::network::{Branch, Bus, Generator};
    assert!(buses >= 2, "a feeder has at least two buses");
    let base_kv = 20.0;
    let base_mva = 10.0;
    let z_base = base_kv * base_kv / base_mva;
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // SplitMix64: small, good enough for a topology.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut net = Network {
        name: format!("radial{buses}"),
        base_mva,
        buses: Vec::with_capacity(buses),
        generators: vec![Generator {
            bus: 0,
            p_mw: 0.0,
            q_mvar: 0.0,
            qmax_mvar: 1e3,
            qmin_mvar: -1e3,
            vset_pu: 1.0,
            in_service: true,
        }],
        branches: Vec::with_capacity(buses - 1),
    };
    for i in 0..buses {
        let load_kw = if i == 0 {
            0.0
        } else {
            0.5 + (next() % 1001) as f64 / 1000.0
        };
        net.buses.push(Bus {
            number: i as u32 + 1,
            kind: if i == 0 { BusKind::Slack } else { BusKind::Pq },
            load_mw: load_kw / 1000.0,
            load_mvar: if i == 0 { 0.0 } else { 0.3 / 1000.0 },
            shunt_mw: 0.0,
            shunt_mvar: 0.0,
            vm_pu: 1.0,
            va_deg: 0.0,
            base_kv,
            vmax_pu: 1.05,
            vmin_pu: 0.9,
        });
        if i > 0 {
            let back = 1 + (next() % (i.min(40) as u64)) as usize;
            net.branches.push(Branch {
                from: i - back,
                to: i,
                r_pu: 0.008 / z_base,
                x_pu: 0.006 / z_base,
                b_pu: 0.0,
                rate_a_mva: 0.0,
                tap: 1.0,
                shift_deg: 0.0,
                in_service: true,
            });
        }
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matpower::parse_case;
    use crate::newton_raphson;

    fn agree(a: &PowerFlow, b: &PowerFlow) {
        for i in 0..a.vm_pu.len() {
            assert!((a.vm_pu[i] - b.vm_pu[i]).abs() < 1e-7, "bus {i}");
            assert!((a.va_deg[i] - b.va_deg[i]).abs() < 1e-6, "bus {i}");
        }
        assert!(
            (a.losses_mw - b.losses_mw).abs() <= 1e-6 * a.losses_mw.abs() + 1e-7,
            "losses {} vs {}",
            a.losses_mw,
            b.losses_mw
        );
    }

    #[test]
    fn the_sweep_agrees_with_newton_raphson_on_generated_feeders() {
        for (buses, seed) in [(2, 1), (50, 2), (1_000, 3)] {
            let net = generated_radial_feeder(buses, seed);
            let nr = newton_raphson(&net, &PowerFlowOptions::default()).unwrap();
            let sw = RadialFeeder::new(&net)
                .unwrap()
                .solve(&net, &PowerFlowOptions::default())
                .unwrap();
            assert!(sw.iterations <= 10, "{}", sw.iterations);
            agree(&nr, &sw);
        }
    }

    /// Transformers in either orientation, with an off-nominal tap, a phase shift and line
    /// charging, and a generator at a PQ bus (a PV system): the sweep still solves what
    /// Newton-Raphson solves.
    #[test]
    fn taps_shifts_charging_and_injections_are_handled_in_both_orientations() {
        let net = parse_case(
            "mpc.version = '2';\nmpc.baseMVA = 1;\nmpc.bus = [\n\
             1 3 0 0 0 0 1 1.02 0 20 1 1.1 0.9;\n\
             2 1 0.1 0.05 0 0.01 1 1 0 0.4 1 1.1 0.9;\n\
             3 1 0.05 0.02 0.001 0 1 1 0 0.4 1 1.1 0.9;\n\
             4 1 0.08 0.03 0 0 1 1 0 0.4 1 1.1 0.9;\n\
             5 1 0.02 0.01 0 0 1 1 0 0.4 1 1.1 0.9;\n];\n\
             mpc.gen = [\n1 0 0 10 -10 1.02 1 1 10 0;\n5 0.06 0.01 1 -1 1 1 1 1 0;\n];\n\
             mpc.branch = [\n\
             1 2 0.01 0.04 0.002 0 0 0 0.975 1.5 1 -360 360;\n\
             2 3 0.02 0.01 0.001 0 0 0 0 0 1 -360 360;\n\
             4 2 0.01 0.03 0 0 0 0 1.025 -2 1 -360 360;\n\
             4 5 0.03 0.02 0 0 0 0 0 0 1 -360 360;\n];\n",
        )
        .unwrap();
        let nr = newton_raphson(&net, &PowerFlowOptions::default()).unwrap();
        let sw = RadialFeeder::new(&net)
            .unwrap()
            .solve(&net, &PowerFlowOptions::default())
            .unwrap();
        agree(&nr, &sw);
    }

    #[test]
    fn what_the_sweep_cannot_solve_is_refused_by_name() {
        let mut net = generated_radial_feeder(10, 7);
        let mut looped = net.clone();
        let mut closing = looped.branches[3].clone();
        closing.from = 9;
        closing.to = 2;
        looped.branches.push(closing);
        assert!(matches!(
            RadialFeeder::new(&looped).unwrap_err(),
            SweepError::Meshed { .. }
        ));
        let mut cut = net.clone();
        let k = cut.branches.iter().position(|b| b.to == 9).unwrap();
        cut.branches[k].in_service = false;
        assert_eq!(
            RadialFeeder::new(&cut).unwrap_err(),
            SweepError::Unreached(10)
        );
        let mut two = net.clone();
        two.buses[4].kind = BusKind::Slack;
        assert_eq!(
            RadialFeeder::new(&two).unwrap_err(),
            SweepError::SeveralSlacks(2)
        );
        // Far more load than a 20 kV feeder carries: an error, not a wrong answer.
        let feeder = RadialFeeder::new(&net).unwrap();
        for b in &mut net.buses[1..] {
            b.load_mw = 5_000.0;
        }
        assert!(matches!(
            feeder
                .solve(&net, &PowerFlowOptions::default())
                .unwrap_err(),
            SweepError::Diverged { .. }
        ));
    }
}
