//! The community's feeder: generated, a MATPOWER case with the homes spread over its buses, or
//! an OpenDSS feeder with the homes in the places of its single-phase loads (solved unbalanced).
//!
//! A generated feeder is what a distribution planner would sketch for `n` homes: up to
//! `homes_per_transformer` homes share one distribution transformer (20/0.4 kV, `transformer_kva`,
//! 1 % + j4 % on its rating); each transformer feeds `streets` low-voltage cables (NAYY 4x150:
//! 0.206 + j0.080 Ω/km, 270 A) with a bus every `bus_spacing_m` metres and `homes_per_bus` homes
//! on each. With more than one transformer they hang off a 20 kV cable (NA2XS2Y 1x185: 0.161 +
//! j0.117 Ω/km, 362 A) from the point of common coupling, 300 m apart.

use gridmesh_grid::unbalanced::{Circuit, Connection};
use gridmesh_grid::{Branch, Bus, BusKind, Generator, Network};

use gridmesh_agent::community::Direction;

use crate::scenario::{FeederChoice, ScenarioError};

const BASE_MVA: f64 = 1.0;
const MV_KV: f64 = 20.0;
const LV_KV: f64 = 0.4;

/// The network a feeder is solved on.
pub enum Grid {
    /// Balanced, positive sequence (solved by the radial sweep).
    Balanced(Network),
    /// Unbalanced, phase by phase, read from an OpenDSS script.
    Unbalanced(Box<Circuit>),
}

/// A feeder and where the homes are on it.
pub struct Feeder {
    pub grid: Grid,
    /// Where each home is: its bus (balanced: index into the network's buses) or the load whose
    /// place it took (unbalanced: index into the circuit's loads).
    pub home_site: Vec<usize>,
    /// The market area of each home (`t1/s2/h17`: transformer, street, home; `b18/h3`: bus and
    /// home; `load7/h3`: load and home).
    pub home_area: Vec<String>,
    /// The distribution transformers (balanced: indices into the network's branches;
    /// unbalanced: into the circuit's transformers).
    pub transformers: Vec<usize>,
    /// Sum of the transformers' ratings, kW (at unity power factor).
    pub transformer_kw: f64,
    /// The homes (sorted) that share a rating, kW: behind each distribution transformer where
    /// the feeder says which (the generated feeder), else all homes sharing the sum.
    pub capacity_groups: Vec<(Vec<usize>, f64)>,
}

/// Share of a cable's rating, and of the voltage band's allowed drop, the coordinator plans to
/// (the rest covers forecast errors and what the linearisation leaves out).
pub const PLANNING_SHARE: f64 = 0.9;

/// A limit of the feeder that the homes' net imports (or exports) share, linearised: per slot,
/// `Σ weight · net flow that way (kW) ≤ limit_kw` over `homes` (home, weight; sorted by home).
#[derive(Clone, Debug, PartialEq)]
pub struct FeederLimit {
    /// What it is: `branch 3-17 (187 kVA)`, `voltage at bus 42`.
    pub name: String,
    pub direction: Direction,
    pub homes: Vec<(usize, f64)>,
    pub limit_kw: f64,
}

impl Feeder {
    /// The bus each home is connected at: its site on a balanced feeder, its load's bus on an
    /// unbalanced one (indices of the buses of the feeder's snapshots).
    pub fn home_buses(&self) -> Vec<usize> {
        match &self.grid {
            Grid::Balanced(_) => self.home_site.clone(),
            Grid::Unbalanced(circuit) => self
                .home_site
                .iter()
                .map(|&k| circuit.loads[k].terminal.bus)
                .collect(),
        }
    }

    /// The feeder's limits for a coordinator, both ways, within the voltage band `band_pu`,
    /// with the homes drawing `q_per_p` kvar per kW. On a balanced radial feeder
    /// ([`Feeder::radial_limits`]): its cables and transformers, and the voltage at each of its
    /// ends. On an unbalanced feeder: the voltage at each home's phase
    /// ([`Feeder::phase_limits`]) and its lines' ratings phase by phase
    /// ([`Feeder::line_limits`]); the transformers' ratings stand.
    pub fn limits(&self, band_pu: (f64, f64), q_per_p: f64) -> Vec<FeederLimit> {
        match &self.grid {
            Grid::Balanced(net) => self.radial_limits(net, band_pu, q_per_p),
            Grid::Unbalanced(circuit) => {
                let mut limits = self.phase_limits(circuit, band_pu);
                limits.extend(self.line_limits(circuit, band_pu, q_per_p));
                limits
            }
        }
    }

    /// On a balanced radial feeder: each rated branch where it leaves a fork or is rated below
    /// the branch above it (further down a cable, the same rating carries fewer homes), weighing
    /// the homes behind it by one, at [`PLANNING_SHARE`] of its rating (at unity power factor),
    /// in both directions; and the voltage at each end of the feeder (a bus nothing hangs off),
    /// linearised as LinDistFlow does: the drop there is `Σ_j (R + q_per_p · X)_shared(j) · P_j`
    /// (pu), with `R`, `X` the impedance of the path it shares with home `j`. A voltage limit is
    /// in kW at the bus itself: a home weighs the share of the bus's path to the source it
    /// shares, and the limit is the drop (importing) or rise (exporting) the band allows from
    /// the source's voltage, at [`PLANNING_SHARE`], over the path's impedance.
    fn radial_limits(&self, net: &Network, band_pu: (f64, f64), q_per_p: f64) -> Vec<FeederLimit> {
        // The tree from the source (the same ordering the sweep solves on).
        let Ok(tree) = gridmesh_grid::sweep::RadialFeeder::new(net) else {
            return Vec::new();
        };
        let slack = tree.slack();
        let source_pu = net
            .generators
            .iter()
            .find(|g| g.bus == slack && g.in_service)
            .map_or(1.0, |g| g.vset_pu);
        let n = net.buses.len();
        // Each bus's branch toward the source.
        let up: Vec<Option<usize>> = (0..n).map(|b| tree.parent(b).map(|p| p.1)).collect();
        let parent_bus = |b: usize| tree.parent(b).map(|p| p.0);
        let children = {
            let mut c = vec![0usize; n];
            for b in 0..n {
                if let Some(p) = parent_bus(b) {
                    c[p] += 1;
                }
            }
            c
        };
        // Each bus's path to the source: (branch, impedance from the source to its far end).
        let z = |k: usize| {
            let br = &net.branches[k];
            br.r_pu + q_per_p * br.x_pu
        };
        let mut depth_z = vec![0.0; n];
        for &b in &tree.order()[1..] {
            let k = up[b].expect("reached");
            depth_z[b] = depth_z[parent_bus(b).expect("reached")] + z(k);
        }
        let path = |mut b: usize| {
            let mut out = Vec::new();
            while let Some(k) = up[b] {
                out.push(k);
                b = parent_bus(b).expect("a branch up has a bus up");
            }
            out
        };
        let home_paths: Vec<Vec<usize>> = self.home_site.iter().map(|&b| path(b)).collect();
        let mut limits = Vec::new();
        // Rated branches.
        for (k, br) in net.branches.iter().enumerate() {
            if !br.in_service || br.rate_a_mva <= 0.0 {
                continue;
            }
            let from_bus = if up[br.to] == Some(k) { br.from } else { br.to };
            let above = up[from_bus];
            let keep = match above {
                None => true,
                Some(a) => {
                    children[from_bus] > 1
                        || net.branches[a].rate_a_mva <= 0.0
                        || br.rate_a_mva < net.branches[a].rate_a_mva
                }
            };
            if !keep {
                continue;
            }
            let homes: Vec<(usize, f64)> = home_paths
                .iter()
                .enumerate()
                .filter(|(_, p)| p.contains(&k))
                .map(|(i, _)| (i, 1.0))
                .collect();
            if homes.is_empty() {
                continue;
            }
            for direction in [Direction::Import, Direction::Export] {
                limits.push(FeederLimit {
                    name: format!(
                        "branch {}-{} ({:.0} kVA)",
                        net.buses[br.from].number,
                        net.buses[br.to].number,
                        br.rate_a_mva * 1e3
                    ),
                    direction,
                    homes: homes.clone(),
                    limit_kw: br.rate_a_mva * 1e3 * PLANNING_SHARE,
                });
            }
        }
        // The voltage at each end of the feeder with homes behind its path.
        let drop_pu = (source_pu - band_pu.0) * PLANNING_SHARE;
        let rise_pu = (band_pu.1 - source_pu) * PLANNING_SHARE;
        for e in 0..n {
            if e == slack || children[e] > 0 || up[e].is_none() {
                continue;
            }
            let own = path(e);
            let homes: Vec<(usize, f64)> = home_paths
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let shared: f64 = p.iter().filter(|k| own.contains(k)).map(|&k| z(k)).sum();
                    (shared > 0.0).then(|| (i, shared / depth_z[e]))
                })
                .collect();
            if homes.is_empty() || depth_z[e] <= 0.0 {
                continue;
            }
            // drop = Σ z_shared · P / S_base: P_kW ≤ drop · S_base(kW) / z_path at the bus.
            for (direction, pu) in [(Direction::Import, drop_pu), (Direction::Export, rise_pu)] {
                if pu > 0.0 {
                    limits.push(FeederLimit {
                        name: format!("voltage at bus {}", net.buses[e].number),
                        direction,
                        homes: homes.clone(),
                        limit_kw: pu * net.base_mva * 1e3 / depth_z[e],
                    });
                }
            }
        }
        limits
    }

    /// On an unbalanced feeder: the voltage at each home's node (its load's phase), linearised
    /// around the feeder without load ([`Circuit::phase_sensitivities`]), both ways. In kW at
    /// the node: each home weighs how much a kW of it moves the node against a kW of the homes
    /// at the node itself (negative where it moves it the other way, through the neutral), and
    /// the limit is the headroom to the band at [`PLANNING_SHARE`]. No limit where the
    /// linearisation does not solve (the transformers' ratings stand).
    fn phase_limits(&self, circuit: &Circuit, band_pu: (f64, f64)) -> Vec<FeederLimit> {
        let mut bare = circuit.clone();
        for l in &mut bare.loads {
            l.kw = 0.0;
            l.kvar = 0.0;
        }
        let Ok(sens) = bare.phase_sensitivities(&bare.solve_options) else {
            return Vec::new();
        };
        let mut limits = Vec::new();
        for (i, &load) in sens.loads.iter().enumerate() {
            // A kW imported at the node itself lowers it by `own` pu.
            let own = -sens.pu_per_kw[i][i];
            if own <= 0.0 {
                continue;
            }
            let homes: Vec<(usize, f64)> = self
                .home_site
                .iter()
                .enumerate()
                .filter_map(|(h, site)| {
                    let k = sens.loads.iter().position(|l| l == site)?;
                    let w = (-sens.pu_per_kw[i][k] / own).max(0.0);
                    (w.abs() > 1e-6).then_some((h, w))
                })
                .collect();
            if !homes.iter().any(|(h, _)| self.home_site[*h] == load) {
                continue;
            }
            let vm = sens.vm_pu[i];
            let l = &bare.loads[load];
            let name = format!(
                "voltage at {}.{}",
                bare.buses[l.terminal.bus].name, l.terminal.nodes[0]
            );
            for (direction, head_pu) in [
                (Direction::Import, vm - band_pu.0),
                (Direction::Export, band_pu.1 - vm),
            ] {
                limits.push(FeederLimit {
                    name: name.clone(),
                    direction,
                    homes: homes.clone(),
                    limit_kw: (head_pu * PLANNING_SHARE).max(0.0) / own,
                });
            }
        }
        limits
    }

    /// On an unbalanced feeder: each line's rating, phase by phase, where the line leaves a
    /// fork (or a transformer) or is rated below the line above it (further down, the same
    /// rating carries fewer homes). A home weighs one on the phase it is connected to (a share
    /// on each where it takes several); the limit is the phase's current at the line's rating
    /// at the band's lowest voltage, with the homes' `q_per_p`, at [`PLANNING_SHARE`], both ways.
    fn line_limits(
        &self,
        circuit: &Circuit,
        band_pu: (f64, f64),
        q_per_p: f64,
    ) -> Vec<FeederLimit> {
        let n = circuit.buses.len();
        let mut adjacent: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
        for (k, l) in circuit.lines.iter().enumerate() {
            adjacent[l.from.bus].push((k, l.to.bus));
            adjacent[l.to.bus].push((k, l.from.bus));
        }
        // The trees hanging off the sources and the transformers, breadth first.
        let roots: Vec<usize> = circuit
            .sources
            .iter()
            .map(|s| s.terminal.bus)
            .chain(
                circuit
                    .transformers
                    .iter()
                    .flat_map(|t| t.windings.iter().map(|w| w.terminal.bus)),
            )
            .collect();
        let mut up: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut seen = vec![false; n];
        let mut queue = std::collections::VecDeque::new();
        for &r in &roots {
            if !seen[r] {
                seen[r] = true;
                queue.push_back(r);
            }
        }
        while let Some(b) = queue.pop_front() {
            for &(k, next) in &adjacent[b] {
                if !seen[next] {
                    seen[next] = true;
                    up[next] = Some((k, b));
                    queue.push_back(next);
                }
            }
        }
        let mut children = vec![0usize; n];
        for (_, parent) in up.iter().flatten() {
            children[*parent] += 1;
        }
        // Each home's phases (weight per phase node) and the lines above it.
        let mut carried: Vec<Vec<(usize, u8, f64)>> = vec![Vec::new(); circuit.lines.len()];
        for (h, &site) in self.home_site.iter().enumerate() {
            let Some(load) = circuit.loads.get(site) else {
                continue;
            };
            let phases: Vec<u8> = load
                .terminal
                .nodes
                .iter()
                .copied()
                .filter(|p| (1..=3).contains(p))
                .collect();
            if phases.is_empty() {
                continue;
            }
            let w = 1.0 / phases.len() as f64;
            let mut b = load.terminal.bus;
            while let Some((k, parent)) = up[b] {
                for &p in &phases {
                    carried[k].push((h, p, w));
                }
                b = parent;
            }
        }
        let mut limits = Vec::new();
        for (k, line) in circuit.lines.iter().enumerate() {
            if line.rating_a <= 0.0 || carried[k].is_empty() {
                continue;
            }
            // The line's upper end and the line above it.
            let below = if up[line.to.bus].map(|u| u.0) == Some(k) {
                line.to.bus
            } else {
                line.from.bus
            };
            let Some((_, above)) = up[below] else {
                continue;
            };
            let at_fork = roots.contains(&above) || children[above] > 1;
            let narrower =
                up[above].is_some_and(|(j, _)| line.rating_a < circuit.lines[j].rating_a);
            if !(at_fork || narrower) {
                continue;
            }
            let kv_ln = circuit.buses[above].kv_base_ln;
            if kv_ln <= 0.0 {
                continue;
            }
            let limit_kw = line.rating_a * kv_ln * band_pu.0 * PLANNING_SHARE
                / (1.0 + q_per_p * q_per_p).sqrt();
            for phase in 1..=3u8 {
                let mut homes: Vec<(usize, f64)> = carried[k]
                    .iter()
                    .filter(|(_, p, _)| *p == phase)
                    .map(|(h, _, w)| (*h, *w))
                    .collect();
                if homes.is_empty() {
                    continue;
                }
                homes.sort_by_key(|(h, _)| *h);
                let name = format!("line {} phase {phase} ({:.0} A)", line.name, line.rating_a);
                for direction in [Direction::Import, Direction::Export] {
                    limits.push(FeederLimit {
                        name: name.clone(),
                        direction,
                        homes: homes.clone(),
                        limit_kw,
                    });
                }
            }
        }
        limits
    }
}

fn bus(number: usize, kind: BusKind, kv: f64, f: &FeederChoice) -> Bus {
    Bus {
        number: number as u32,
        kind,
        load_mw: 0.0,
        load_mvar: 0.0,
        shunt_mw: 0.0,
        shunt_mvar: 0.0,
        vm_pu: 1.0,
        va_deg: 0.0,
        base_kv: kv,
        vmax_pu: f.vmax_pu,
        vmin_pu: f.vmin_pu,
    }
}

fn cable(from: usize, to: usize, kv: f64, km: f64, r: f64, x: f64, amps: f64) -> Branch {
    let z_base = kv * kv / BASE_MVA;
    Branch {
        from,
        to,
        r_pu: r * km / z_base,
        x_pu: x * km / z_base,
        b_pu: 0.0,
        rate_a_mva: 3f64.sqrt() * kv * amps / 1_000.0,
        tap: 1.0,
        shift_deg: 0.0,
        in_service: true,
    }
}

/// Builds the feeder for `placed.len()` homes; `placed` holds the MATPOWER bus of each home
/// where the homes file names one.
pub fn build(
    f: &FeederChoice,
    placed: &[Option<u32>],
    base: &std::path::Path,
) -> Result<Feeder, ScenarioError> {
    if placed.iter().any(Option::is_some) && f.matpower.is_empty() {
        return Err(ScenarioError::Invalid(
            "the homes file's bus column places homes on a MATPOWER case's buses: set feeder.matpower too".into(),
        ));
    }
    if !f.matpower.is_empty() {
        return from_matpower(f, placed, base);
    }
    if !f.dss.is_empty() {
        return from_dss(f, placed.len(), base);
    }
    let homes = placed.len();
    let groups = homes.div_ceil(f.homes_per_transformer);
    let mut net = Network {
        name: format!("generated-{homes}"),
        base_mva: BASE_MVA,
        buses: vec![bus(1, BusKind::Slack, MV_KV, f)],
        generators: vec![Generator {
            bus: 0,
            p_mw: 0.0,
            q_mvar: 0.0,
            qmax_mvar: 1e3,
            qmin_mvar: -1e3,
            vset_pu: 1.0,
            in_service: true,
        }],
        branches: Vec::new(),
    };
    let (mut home_bus, mut home_area, mut transformers) = (Vec::new(), Vec::new(), Vec::new());
    let mut mv_prev = 0;
    for g in 0..groups {
        let in_group = (homes - g * f.homes_per_transformer).min(f.homes_per_transformer);
        // The MV side: the PCC itself for one transformer, else a bus on the MV cable.
        let mv = if groups == 1 {
            0
        } else {
            net.buses
                .push(bus(net.buses.len() + 1, BusKind::Pq, MV_KV, f));
            let b = net.buses.len() - 1;
            net.branches
                .push(cable(mv_prev, b, MV_KV, 0.3, 0.161, 0.117, 362.0));
            mv_prev = b;
            b
        };
        net.buses
            .push(bus(net.buses.len() + 1, BusKind::Pq, LV_KV, f));
        let lv = net.buses.len() - 1;
        let scale = BASE_MVA / (f.transformer_kva / 1_000.0);
        transformers.push(net.branches.len());
        net.branches.push(Branch {
            from: mv,
            to: lv,
            r_pu: 0.01 * scale,
            x_pu: 0.04 * scale,
            b_pu: 0.0,
            rate_a_mva: f.transformer_kva / 1_000.0,
            tap: 1.0,
            shift_deg: 0.0,
            in_service: true,
        });
        // Homes go round the streets, filling each street's buses from the transformer out.
        let mut street_last = vec![lv; f.streets];
        let mut on_bus = vec![f.homes_per_bus; f.streets];
        for k in 0..in_group {
            let s = k % f.streets;
            if on_bus[s] == f.homes_per_bus {
                net.buses
                    .push(bus(net.buses.len() + 1, BusKind::Pq, LV_KV, f));
                let b = net.buses.len() - 1;
                net.branches.push(cable(
                    street_last[s],
                    b,
                    LV_KV,
                    f.bus_spacing_m / 1_000.0,
                    0.206,
                    0.080,
                    270.0,
                ));
                street_last[s] = b;
                on_bus[s] = 0;
            }
            on_bus[s] += 1;
            home_bus.push(street_last[s]);
            home_area.push(format!("t{}/s{}/h{}", g + 1, s + 1, home_bus.len()));
        }
    }
    let capacity_groups = (0..groups)
        .map(|g| {
            let first = g * f.homes_per_transformer;
            let homes: Vec<usize> = (first..(first + f.homes_per_transformer).min(homes)).collect();
            (homes, f.transformer_kva)
        })
        .collect();
    Ok(Feeder {
        transformer_kw: f.transformer_kva * groups as f64,
        capacity_groups,
        grid: Grid::Balanced(net),
        home_site: home_bus,
        home_area,
        transformers,
    })
}

fn from_matpower(
    f: &FeederChoice,
    placed: &[Option<u32>],
    base: &std::path::Path,
) -> Result<Feeder, ScenarioError> {
    let path = base.join(&f.matpower);
    let err = |m: String| ScenarioError::Data {
        path: path.display().to_string(),
        message: m,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let mut net = gridmesh_grid::matpower::parse_case(&text).map_err(|e| err(e.to_string()))?;
    if !net.is_radial() {
        return Err(err(
            "the simulator solves radial feeders (backward/forward sweep); this case has loops"
                .into(),
        ));
    }
    let load_buses: Vec<usize> = (0..net.buses.len())
        .filter(|&b| net.buses[b].kind == BusKind::Pq)
        .collect();
    if load_buses.is_empty() {
        return Err(err("the case has no load (PQ) bus to put homes on".into()));
    }
    // The case's own loads are replaced by the homes; its voltage band is the scenario's.
    for b in &mut net.buses {
        b.load_mw = 0.0;
        b.load_mvar = 0.0;
        b.vmin_pu = f.vmin_pu;
        b.vmax_pu = f.vmax_pu;
    }
    let slack = net
        .slack_buses()
        .next()
        .ok_or_else(|| err("no slack bus".into()))?;
    let transformers: Vec<usize> = (0..net.branches.len())
        .filter(|&k| net.branches[k].from == slack || net.branches[k].to == slack)
        .collect();
    let transformer_kw = transformers
        .iter()
        .map(|&k| net.branches[k].rate_a_mva * 1_000.0)
        .sum::<f64>();
    let site = |key: &str, n: u32| match net.bus_index(n) {
        Some(b) if b == slack => Err(err(format!(
            "{key}: bus {n} is the slack bus (the upstream grid); homes sit on load buses"
        ))),
        Some(b) => Ok(b),
        None => Err(err(format!("{key}: the case has no bus {n}"))),
    };
    let sites: Vec<usize> = if f.home_buses.is_empty() {
        load_buses
    } else {
        f.home_buses
            .iter()
            .map(|&n| site("feeder.home_buses", n))
            .collect::<Result<_, _>>()?
    };
    let home_bus: Vec<usize> = placed
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Some(n) => site(&format!("homes.file (home {})", i + 1), *n),
            None => Ok(sites[i % sites.len()]),
        })
        .collect::<Result<_, _>>()?;
    let home_area = home_bus
        .iter()
        .enumerate()
        .map(|(i, b)| format!("b{}/h{}", net.buses[*b].number, i + 1))
        .collect();
    Ok(Feeder {
        capacity_groups: vec![(
            (0..home_bus.len()).collect(),
            rated_or_unlimited(transformer_kw),
        )],
        grid: Grid::Balanced(net),
        home_site: home_bus,
        home_area,
        transformers,
        transformer_kw: rated_or_unlimited(transformer_kw),
    })
}

/// An OpenDSS feeder: its loads give way to the homes, which take the places of its
/// single-phase (wye) loads in turn, or of those `f.home_loads` names.
fn from_dss(
    f: &FeederChoice,
    homes: usize,
    base: &std::path::Path,
) -> Result<Feeder, ScenarioError> {
    let path = base.join(&f.dss);
    let err = |m: String| ScenarioError::Data {
        path: path.display().to_string(),
        message: m,
    };
    let mut circuit = Circuit::read_dss(&path).map_err(|e| err(e.to_string()))?;
    // One home on one phase, to neutral: where a single-phase home connects.
    let single_phase = |k: usize| {
        let l = &circuit.loads[k];
        l.phases == 1 && l.connection == Connection::Wye && l.terminal.nodes[0] != 0
    };
    let sites: Vec<usize> = if f.home_loads.is_empty() {
        (0..circuit.loads.len())
            .filter(|&k| single_phase(k))
            .collect()
    } else {
        f.home_loads
            .iter()
            .map(|name| {
                let k = circuit
                    .loads
                    .iter()
                    .position(|l| l.name.eq_ignore_ascii_case(name))
                    .ok_or_else(|| err(format!("feeder.home_loads: the feeder has no load `{name}`")))?;
                if single_phase(k) {
                    Ok(k)
                } else {
                    Err(err(format!(
                        "feeder.home_loads: load `{name}` is not a single-phase load to neutral, where a home connects"
                    )))
                }
            })
            .collect::<Result<_, _>>()?
    };
    if sites.is_empty() {
        return Err(err(
            "the feeder has no single-phase load (one phase to neutral) to put homes on".into(),
        ));
    }
    // The feeder's own loads give way to the homes; loads follow the homes, not the script's
    // shapes.
    for l in &mut circuit.loads {
        l.kw = 0.0;
        l.kvar = 0.0;
        l.shape = None;
    }
    circuit.load_mult = 1.0;
    // Distribution transformers: those no regulator drives.
    let transformers: Vec<usize> = (0..circuit.transformers.len())
        .filter(|&k| !circuit.regulators.iter().any(|r| r.transformer == k))
        .collect();
    let transformer_kw: f64 = transformers
        .iter()
        .map(|&k| circuit.transformers[k].windings[0].kva)
        .sum();
    let home_site: Vec<usize> = (0..homes).map(|i| sites[i % sites.len()]).collect();
    let home_area = home_site
        .iter()
        .enumerate()
        .map(|(i, &k)| format!("{}/h{}", circuit.loads[k].name, i + 1))
        .collect();
    Ok(Feeder {
        capacity_groups: vec![((0..homes).collect(), rated_or_unlimited(transformer_kw))],
        grid: Grid::Unbalanced(Box::new(circuit)),
        home_site,
        home_area,
        transformers,
        transformer_kw: rated_or_unlimited(transformer_kw),
    })
}

/// A rating, or none (infinite) where the feeder rates nothing.
fn rated_or_unlimited(kw: f64) -> f64 {
    if kw > 0.0 {
        kw
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_feeder_is_radial_and_holds_every_home() {
        let f = FeederChoice::default();
        for homes in [1, 20, 121, 1_000] {
            let feeder = build(&f, &vec![None; homes], std::path::Path::new(".")).unwrap();
            assert_eq!(feeder.home_site.len(), homes);
            let Grid::Balanced(net) = &feeder.grid else {
                panic!("a generated feeder is balanced");
            };
            assert!(net.is_radial());
            assert_eq!(feeder.transformers.len(), homes.div_ceil(120));
            gridmesh_grid::sweep::RadialFeeder::new(net).unwrap();
        }
    }

    /// Two transformers of two streets each: the limits are each transformer, each street's
    /// first cable (further cables of a street carry fewer homes at the same rating), the MV
    /// cables, and the voltage at each street's end, which weighs the home at the end by one
    /// and the homes nearer the transformer by the share of the path they share.
    #[test]
    fn an_unbalanced_feeders_lines_are_limits_on_each_homes_phase() {
        let master = gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss");
        let f = FeederChoice {
            dss: master.file_name().unwrap().to_string_lossy().into_owned(),
            ..FeederChoice::default()
        };
        let feeder = build(&f, &vec![None; 55], master.parent().unwrap()).unwrap();
        let Grid::Unbalanced(circuit) = &feeder.grid else {
            panic!("an OpenDSS feeder is unbalanced");
        };
        let lines = feeder.line_limits(circuit, (0.9, 1.1), 0.2);
        let import: Vec<&FeederLimit> = lines
            .iter()
            .filter(|l| l.direction == Direction::Import)
            .collect();
        assert_eq!(import.len() * 2, lines.len(), "both ways");
        // Far fewer than the lines' phases: a chain of one rating is one limit.
        assert!(
            import.len() > 3 && import.len() < circuit.lines.len(),
            "{} of {} lines",
            import.len(),
            circuit.lines.len()
        );
        for (h, &site) in feeder.home_site.iter().enumerate() {
            let phase = circuit.loads[site].terminal.nodes[0];
            let on: Vec<&&FeederLimit> = import
                .iter()
                .filter(|l| l.homes.iter().any(|(i, _)| *i == h))
                .collect();
            // Every home is under a limit (the line leaving the transformer), on its phase only,
            // weighing one.
            assert!(!on.is_empty(), "home {h}");
            for l in on {
                assert!(l.name.contains(&format!("phase {phase}")), "{}", l.name);
                assert!(l.homes.iter().all(|(_, w)| *w == 1.0));
            }
        }
        // The limit: the rating at the band's lowest voltage and the homes' power factor, at the
        // planning share.
        let first = import.iter().max_by_key(|l| l.homes.len()).unwrap();
        let line = circuit
            .lines
            .iter()
            .find(|l| first.name.starts_with(&format!("line {} ", l.name)))
            .unwrap();
        let kv = circuit.buses[line.from.bus]
            .kv_base_ln
            .max(circuit.buses[line.to.bus].kv_base_ln);
        let expected = line.rating_a * kv * 0.9 * PLANNING_SHARE / (1.0f64 + 0.04).sqrt();
        assert!(
            (first.limit_kw - expected).abs() < 1e-6 * expected,
            "{} vs {expected}",
            first.limit_kw
        );
    }

    #[test]
    fn the_limits_are_the_forks_cables_and_each_ends_voltage() {
        let f = FeederChoice {
            homes_per_transformer: 8,
            streets: 2,
            homes_per_bus: 1,
            ..FeederChoice::default()
        };
        let feeder = build(&f, &[None; 16], std::path::Path::new(".")).unwrap();
        let limits: Vec<FeederLimit> = feeder
            .limits((0.94, 1.06), 0.2)
            .into_iter()
            .filter(|l| l.direction == Direction::Import)
            .collect();
        let cable_kw = 3f64.sqrt() * 0.4 * 270.0 * PLANNING_SHARE;
        let of = |pred: &dyn Fn(&FeederLimit) -> bool| limits.iter().filter(|l| pred(l)).count();
        assert_eq!(of(&|l| l.name.contains("(400 kVA)")), 2, "{limits:#?}");
        for l in limits.iter().filter(|l| l.name.contains("(400 kVA)")) {
            assert_eq!(l.homes.len(), 8);
            assert!((l.limit_kw - 360.0).abs() < 1e-9);
        }
        // Four streets, one first cable each, four homes behind it (homes go round the streets).
        let streets: Vec<&FeederLimit> = limits
            .iter()
            .filter(|l| (l.limit_kw - cable_kw).abs() < 1e-6)
            .collect();
        assert_eq!(streets.len(), 4, "{limits:#?}");
        assert!(streets.iter().all(|l| l.homes.len() == 4));
        let ends: Vec<&FeederLimit> = limits
            .iter()
            .filter(|l| l.name.starts_with("voltage"))
            .collect();
        assert_eq!(ends.len(), 4);
        for e in &ends {
            // Behind its transformer, the other street's four homes share only the transformer
            // and weigh alike; the street's own weigh more the further out they are, the last
            // one fully. Behind the other transformer, homes share only the MV cable.
            let mut near: Vec<f64> = e
                .homes
                .iter()
                .map(|(_, w)| *w)
                .filter(|w| *w > 0.01)
                .collect();
            near.sort_by(f64::total_cmp);
            assert_eq!(near.len(), 8, "{e:?}");
            assert!(
                near[..4].iter().all(|w| (w - near[0]).abs() < 1e-12),
                "{near:?}"
            );
            assert!(near[3..].windows(2).all(|p| p[1] > p[0] + 0.1), "{near:?}");
            assert!((near[7] - 1.0).abs() < 1e-12);
            assert!(e.homes.iter().all(|(_, w)| *w > 0.0 && *w <= 1.0 + 1e-12));
            assert!(e.limit_kw > 0.0 && e.limit_kw < 1e4);
        }
    }
}
