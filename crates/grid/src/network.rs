//! The network model. Quantities carry their unit in the name: `_mw`, `_mvar`, `_pu`, `_deg`, `_kv`.

/// What a bus's power-flow equations fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    /// Load bus: active and reactive injection given, voltage unknown.
    Pq,
    /// Generator bus: active injection and voltage magnitude given.
    Pv,
    /// The slack (reference) bus: voltage magnitude and angle given; the point of common coupling
    /// with the upstream grid in a community feeder.
    Slack,
    /// Out of service.
    Isolated,
}

/// A bus (node) of the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Bus {
    /// The case's bus number (MATPOWER `BUS_I`), kept for reports.
    pub number: u32,
    pub kind: BusKind,
    pub load_mw: f64,
    pub load_mvar: f64,
    /// Shunt conductance, MW consumed at 1.0 pu voltage.
    pub shunt_mw: f64,
    /// Shunt susceptance, MVAr injected at 1.0 pu voltage.
    pub shunt_mvar: f64,
    /// Initial (or, for PV and slack buses without generators, fixed) voltage.
    pub vm_pu: f64,
    pub va_deg: f64,
    pub base_kv: f64,
    pub vmax_pu: f64,
    pub vmin_pu: f64,
}

/// A generator (or the upstream grid at the slack bus).
#[derive(Clone, Debug, PartialEq)]
pub struct Generator {
    /// Index into [`Network::buses`].
    pub bus: usize,
    pub p_mw: f64,
    pub q_mvar: f64,
    pub qmax_mvar: f64,
    pub qmin_mvar: f64,
    /// Voltage set point.
    pub vset_pu: f64,
    pub in_service: bool,
}

/// A line or transformer: the MATPOWER pi model with an ideal phase-shifting transformer at the
/// `from` end.
#[derive(Clone, Debug, PartialEq)]
pub struct Branch {
    /// Indices into [`Network::buses`].
    pub from: usize,
    pub to: usize,
    pub r_pu: f64,
    pub x_pu: f64,
    /// Total line charging susceptance.
    pub b_pu: f64,
    /// Long-term rating; 0 means unlimited.
    pub rate_a_mva: f64,
    /// Off-nominal turns ratio (1.0 for a line; MATPOWER's 0 means 1).
    pub tap: f64,
    pub shift_deg: f64,
    pub in_service: bool,
}

/// A whole network on one MVA base.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub name: String,
    pub base_mva: f64,
    pub buses: Vec<Bus>,
    pub generators: Vec<Generator>,
    pub branches: Vec<Branch>,
}

impl Network {
    /// The index of the bus with this case number.
    pub fn bus_index(&self, number: u32) -> Option<usize> {
        self.buses.iter().position(|b| b.number == number)
    }

    /// The slack buses (a connected network has exactly one per island).
    pub fn slack_buses(&self) -> impl Iterator<Item = usize> + '_ {
        self.buses
            .iter()
            .enumerate()
            .filter(|(_, b)| b.kind == BusKind::Slack)
            .map(|(i, _)| i)
    }

    /// Total load, MW.
    pub fn total_load_mw(&self) -> f64 {
        self.buses.iter().map(|b| b.load_mw).sum()
    }

    /// Whether every in-service branch connects the buses into trees only (a radial feeder).
    pub fn is_radial(&self) -> bool {
        let live = self
            .buses
            .iter()
            .filter(|b| b.kind != BusKind::Isolated)
            .count();
        let edges = self.branches.iter().filter(|b| b.in_service).count();
        edges + self.slack_buses().count() <= live
    }
}
