//! Unbalanced three-phase feeders: buses with nodes (phases 1, 2, 3 and a neutral where one is
//! modelled), lines with impedance matrices, transformers of any connection and their taps,
//! regulators that move them, shunt capacitors, loads by model and connection per phase, load
//! shapes, and the source behind its short-circuit impedance.
//!
//! The elements are OpenDSS's own models, so a feeder read from an OpenDSS script
//! ([`Circuit::from_dss`]) solves to OpenDSS's answer: each element is a primitive admittance
//! matrix over its terminals' conductors ([`solve`]); the network's nodal admittance matrix is
//! their sum, factorised once (faer's sparse LU); loads and sources enter as injected currents,
//! and the voltages are the fixed point of `V = Y⁻¹ I(V)` (the current-injection method), with
//! regulators sampled between solutions as OpenDSS's static control loop does.
//!
//! Units are in the names: ohms, siemens, volts, kV, kW, kvar, hours. Node 0 is ground.

mod envelope;
mod hosting;
mod import;
mod series;
mod solve;

pub use envelope::{PhaseEnvelope, PhaseEnvelopeOptions, PhaseEnvelopes, PhaseSensitivities};
pub use hosting::{Hosting, HostingOptions, Limit};
pub use import::ImportError;
pub use series::{Step, TimeSeries};
pub use solve::{
    BusVoltages, PowerFlowModel, Solution, SolveError, SolveOptions, Violation, ViolationKind,
};

use faer::c64;

/// How a winding, load or capacitor is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Each phase between its node and the neutral (or ground).
    Wye,
    /// Each phase between its node and the next phase's.
    Delta,
}

/// Where an element's terminal connects: a bus, and for each of the terminal's conductors the
/// bus node it is on (0 = ground).
#[derive(Clone, Debug, PartialEq)]
pub struct Terminal {
    pub bus: usize,
    pub nodes: Vec<u8>,
}

/// A bus: its name (lowercase), its line-to-neutral voltage base (0 where none is known) and
/// its position where the case gives one.
#[derive(Clone, Debug, PartialEq)]
pub struct Bus {
    pub name: String,
    pub kv_base_ln: f64,
    pub xy: Option<(f64, f64)>,
}

/// The source: an ideal voltage behind its short-circuit impedance matrix, grounded.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub name: String,
    pub terminal: Terminal,
    /// Line-to-neutral (or, single-phase, across the source) voltage magnitude.
    pub voltage_v: f64,
    pub angle_deg: f64,
    /// Phase-by-phase impedance, row-major `phases × phases`.
    pub z_ohm: Vec<c64>,
}

/// A line (or switch): a series impedance matrix and half its shunt admittance at each end.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub name: String,
    pub from: Terminal,
    pub to: Terminal,
    /// Row-major `phases × phases`, for the whole length.
    pub z_series_ohm: Vec<c64>,
    /// Row-major `phases × phases`, for the whole length (half goes to each end).
    pub y_shunt_s: Vec<c64>,
    pub rating_a: f64,
    /// Length in metres (`None`: the script gives no unit).
    pub length_m: Option<f64>,
}

impl Line {
    pub fn phases(&self) -> usize {
        self.from.nodes.len()
    }
}

/// A transformer winding.
#[derive(Clone, Debug, PartialEq)]
pub struct Winding {
    pub terminal: Terminal,
    pub connection: Connection,
    /// Rated voltage: line-to-line for two- and three-phase, across the winding for one.
    pub kv: f64,
    pub kva: f64,
    pub r_pu: f64,
    pub tap_pu: f64,
    pub min_tap_pu: f64,
    pub max_tap_pu: f64,
    pub num_taps: u32,
    /// Neutral to ground of a wye winding; negative: open.
    pub r_neutral_ohm: f64,
    pub x_neutral_ohm: f64,
}

impl Winding {
    /// The rated voltage across one phase's coil.
    pub fn coil_voltage_v(&self, phases: usize) -> f64 {
        match (self.connection, phases) {
            (Connection::Wye, 2 | 3) => self.kv * 1000.0 / 3f64.sqrt(),
            _ => self.kv * 1000.0,
        }
    }

    pub fn tap_step_pu(&self) -> f64 {
        if self.num_taps == 0 {
            0.0
        } else {
            (self.max_tap_pu - self.min_tap_pu) / f64::from(self.num_taps)
        }
    }
}

/// A transformer of two or more windings per phase.
#[derive(Clone, Debug, PartialEq)]
pub struct Transformer {
    pub name: String,
    pub phases: usize,
    pub windings: Vec<Winding>,
    /// Short-circuit reactances between winding pairs (12, 13, ..., 23, ...), per unit on
    /// winding 1's kVA.
    pub x_sc_pu: Vec<f64>,
    pub pct_imag: f64,
    pub pct_no_load_loss: f64,
    /// The small admittance that keeps an ungrounded winding from floating, in ppm.
    pub ppm_antifloat: f64,
    /// +1 or -1: which way a delta winding's phase k turns to (k + 1 or k - 1).
    pub delta_direction: i8,
}

/// A voltage regulator's control of a transformer's tap (OpenDSS's RegControl, forward power).
#[derive(Clone, Debug, PartialEq)]
pub struct Regulator {
    pub name: String,
    pub transformer: usize,
    /// The winding whose voltage and current are measured (0-based).
    pub winding: usize,
    /// The winding whose tap moves (0-based).
    pub tap_winding: usize,
    /// The target on the 120 V scale of the PT, and the band around it.
    pub vreg_v: f64,
    pub band_v: f64,
    pub pt_ratio: f64,
    pub ct_primary_a: f64,
    /// Line-drop compensation on the 120 V scale.
    pub r_ldc_v: f64,
    pub x_ldc_v: f64,
    pub pt_phase: PtPhase,
    pub max_tap_change: u32,
    pub delay_s: f64,
    pub enabled: bool,
    /// A remote bus's node regulated instead of the winding (OpenDSS's `bus=`; no line-drop
    /// compensation then), and the PT ratio there.
    pub regulated_node: Option<(usize, u8)>,
    pub remote_pt_ratio: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtPhase {
    Phase(usize),
    Max,
    Min,
}

/// A shunt capacitor bank: between its two terminals per phase (wye) or between phases (delta).
#[derive(Clone, Debug, PartialEq)]
pub struct Capacitor {
    pub name: String,
    pub terminal: Terminal,
    pub terminal2: Terminal,
    pub connection: Connection,
    /// Per phase, one step (OpenDSS sizes every step as the first).
    pub step_y_s: f64,
    /// Steps of the bank, and how many are in service (the first ones) as the script left it.
    pub steps: u32,
    pub in_service: u32,
}

/// A capacitor bank's switching control (OpenDSS's CapControl): it measures an element's
/// terminal and switches the bank's steps in and out.
#[derive(Clone, Debug, PartialEq)]
pub struct CapControl {
    pub name: String,
    pub capacitor: usize,
    pub element: Monitored,
    /// The element's terminal measured (0-based).
    pub terminal: usize,
    pub kind: CapControlKind,
    /// Switch a step in past `on` and out past `off` (volts on the PT's scale, amperes on the
    /// CT's, or kvar into the terminal).
    pub on: f64,
    pub off: f64,
    pub pt_ratio: f64,
    pub ct_ratio: f64,
    pub pt_phase: PhaseChoice,
    pub ct_phase: PhaseChoice,
    pub delay_on_s: f64,
    pub delay_off_s: f64,
    /// After opening, a close waits this long.
    pub dead_time_s: f64,
    /// Current and kvar controls: close below the first voltage, open above the second (PT
    /// scale), whatever else they measure.
    pub voltage_override: Option<(f64, f64)>,
}

/// The element a control measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitored {
    Line(usize),
    Transformer(usize),
}

/// What a capacitor control measures: voltage switches a step in below `on` and out above
/// `off`; current and kvar switch in above `on` and out below `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapControlKind {
    Voltage,
    Current,
    Kvar,
}

/// Which of a terminal's phases a control reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseChoice {
    /// One phase (1-based).
    Phase(usize),
    Max,
    Min,
    Average,
}

/// How a load's current follows its voltage (OpenDSS's load models 1, 2 and 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadModel {
    ConstantPower,
    ConstantImpedance,
    ConstantCurrent,
    /// Constant kW and kvar between `vmin_pu` and `vmax_pu`, and outside them the impedance
    /// that draws it at the limit: OpenDSS's Generator, PVSystem and Storage model 1.
    Source,
}

/// A load: its power at nominal voltage split evenly over its phases.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    pub name: String,
    pub terminal: Terminal,
    pub phases: usize,
    pub connection: Connection,
    pub model: LoadModel,
    pub kv: f64,
    pub kw: f64,
    pub kvar: f64,
    pub vmin_pu: f64,
    pub vmax_pu: f64,
    pub vlow_pu: f64,
    /// Whether the power factor was given (an actual-kW load shape without kvar then keeps it).
    pub pf_given: bool,
    /// The load shape a time series follows (OpenDSS `yearly`, or `daily` where no yearly).
    pub shape: Option<usize>,
}

impl Load {
    /// A single-phase generator between `bus`'s `node` and ground producing `kw` at unity power
    /// factor (a home's PV inverter), as OpenDSS's Generator model 1 with its 0.9-1.1 pu limits.
    pub fn single_phase_generator(name: &str, bus: usize, node: u8, kv_ln: f64, kw: f64) -> Load {
        Load {
            name: name.to_string(),
            terminal: Terminal {
                bus,
                nodes: vec![node, 0],
            },
            phases: 1,
            connection: Connection::Wye,
            model: LoadModel::Source,
            kv: kv_ln,
            kw: -kw,
            kvar: 0.0,
            vmin_pu: 0.9,
            vmax_pu: 1.1,
            vlow_pu: 0.5,
            pf_given: false,
            shape: None,
        }
    }

    /// The voltage across one phase of the load at nominal.
    pub fn phase_base_v(&self) -> f64 {
        match (self.connection, self.phases) {
            (Connection::Wye, 2..) => self.kv * 1000.0 / 3f64.sqrt(),
            _ => self.kv * 1000.0,
        }
    }
}

/// A generator (rooftop PV, a battery discharging) as OpenDSS's Generator model 1: constant
/// kW and kvar, turning into a constant impedance outside `vmin_pu`-`vmax_pu`. Held as a
/// [`Load`] drawing negative power, so the loads' models serve both.
pub type Generator = Load;

/// Multipliers at a fixed interval.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadShape {
    pub name: String,
    pub interval_h: f64,
    pub p_mult: Vec<f64>,
    pub q_mult: Option<Vec<f64>>,
    /// Multipliers are kW and kvar, not per unit of the load's rating.
    pub use_actual: bool,
}

impl LoadShape {
    /// The multiplier at `hour` (the nearest point, the curve repeating), as OpenDSS takes it:
    /// `(p, q)`, `q` equal to `p` where no separate curve is given (0 when actual).
    pub fn at_hour(&self, hour: f64) -> (f64, f64) {
        let n = self.p_mult.len();
        if n == 0 {
            return (1.0, 1.0);
        }
        let mut i = (hour / self.interval_h).round_ties_even() as i64;
        if i > n as i64 {
            i %= n as i64;
        }
        if i == 0 {
            i = n as i64;
        }
        let k = (i - 1).clamp(0, n as i64 - 1) as usize;
        let p = self.p_mult[k];
        let q = match &self.q_mult {
            Some(q) => q.get(k).copied().unwrap_or(p),
            None if self.use_actual => 0.0,
            None => p,
        };
        (p, q)
    }
}

/// A feeder: every element, each bus with its voltage base.
#[derive(Clone, Debug, PartialEq)]
pub struct Circuit {
    pub name: String,
    pub frequency_hz: f64,
    pub buses: Vec<Bus>,
    pub sources: Vec<Source>,
    pub lines: Vec<Line>,
    pub transformers: Vec<Transformer>,
    pub regulators: Vec<Regulator>,
    pub capacitors: Vec<Capacitor>,
    pub cap_controls: Vec<CapControl>,
    pub loads: Vec<Load>,
    /// Generators, PV systems and storage, each drawing negative kW (and kvar where it
    /// absorbs none): what they deliver as the script sets them.
    pub generators: Vec<Generator>,
    pub load_shapes: Vec<LoadShape>,
    /// The system's line-to-line voltage bases; the buses' come from them.
    pub voltage_bases_kv: Vec<f64>,
    /// Every load's kW and kvar are multiplied by this in a snapshot.
    pub load_mult: f64,
    /// How hard to solve: gridmesh's defaults (1e-10 pu) unless the script sets
    /// `tolerance`, `maxiterations` or `maxcontroliter`.
    pub solve_options: SolveOptions,
}

impl Circuit {
    /// The bus named `name` (case-insensitive).
    pub fn bus(&self, name: &str) -> Option<usize> {
        let name = name.to_ascii_lowercase();
        self.buses.iter().position(|b| b.name == name)
    }
}
