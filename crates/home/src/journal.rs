//! What the home keeps on disk besides its telemetry store: the measured history of each slot
//! (the forecasts learn from it) and the slot readings waiting for the node. Both are small JSON
//! files, written whole to a temporary file and renamed, so a crash leaves the old or the new.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use gridmesh_ledger::TxKind;
use serde::{Deserialize, Serialize};

/// Slots of history kept (five weeks: persistence looks a week back).
pub const HISTORY_SLOTS: usize = 5 * 7 * 96;

/// One measured slot. Powers are the slot's means, kW; the battery positive discharging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub load_kw: f64,
    pub pv_kw: f64,
    pub battery_kw: f64,
    pub import_kwh: f64,
    pub export_kwh: f64,
    /// The battery's energy at the slot's end, kWh.
    pub soc_kwh: Option<f64>,
    /// Whether the home followed a plan in this slot (else its local self-consumption mode).
    pub planned: bool,
    /// What the plan it followed wanted: the battery (positive discharging) and the grid
    /// (positive importing), kW.
    #[serde(default)]
    pub planned_battery_kw: Option<f64>,
    #[serde(default)]
    pub planned_grid_kw: Option<f64>,
    /// The EV's charging, measured and planned, kW (its energy is not in `load_kw`).
    #[serde(default)]
    pub ev_kw: f64,
    #[serde(default)]
    pub planned_ev_kw: Option<f64>,
    /// The shiftable loads together, measured (their rated power while on) and planned, kW.
    #[serde(default)]
    pub loads_kw: f64,
    #[serde(default)]
    pub planned_loads_kw: Option<f64>,
    /// The heat pump, measured (its rating while switched on, or its setpoint) and planned, kW,
    /// and the indoor temperature at the slot's end (the room sensor's, or the model's), °C.
    #[serde(default)]
    pub heat_pump_kw: f64,
    #[serde(default)]
    pub planned_heat_pump_kw: Option<f64>,
    #[serde(default)]
    pub indoor_c: Option<f64>,
    /// The hot-water tank's heat pump, measured and planned, kW, and the tank's temperature at
    /// the slot's end (its sensor's, or the model's), °C.
    #[serde(default)]
    pub hot_water_kw: f64,
    #[serde(default)]
    pub planned_hot_water_kw: Option<f64>,
    #[serde(default)]
    pub tank_c: Option<f64>,
}

/// A transaction waiting for the node: what it is, and the hash once sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Queued {
    pub slot: u64,
    pub what: String,
    /// The transaction kind, borsh, hex.
    pub kind_hex: String,
    pub sent: Option<String>,
}

impl Queued {
    pub fn new(slot: u64, what: &str, kind: &TxKind) -> Queued {
        Queued {
            slot,
            what: what.to_string(),
            kind_hex: hex::encode(borsh::to_vec(kind).expect("a transaction kind encodes")),
            sent: None,
        }
    }

    pub fn kind(&self) -> anyhow::Result<TxKind> {
        Ok(borsh::from_slice(&hex::decode(&self.kind_hex)?)?)
    }
}

#[derive(Default, Serialize, Deserialize)]
pub struct Journal {
    pub history: BTreeMap<u64, SlotRecord>,
    pub queue: VecDeque<Queued>,
    /// Readings dropped because the queue was full (the oldest go first).
    #[serde(default)]
    pub dropped: u64,
    #[serde(skip)]
    path: PathBuf,
}

impl Journal {
    pub fn open(dir: &Path) -> anyhow::Result<Journal> {
        let path = dir.join("journal.json");
        let mut j = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Journal>(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is damaged ({e}); move it away to start the home's history afresh",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Journal::default(),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())))
            }
        };
        j.path = path;
        Ok(j)
    }

    pub fn record(&mut self, slot: u64, r: SlotRecord) {
        self.history.insert(slot, r);
        while self.history.len() > HISTORY_SLOTS {
            self.history.pop_first();
        }
    }

    /// Queues `q`, dropping the oldest beyond `max`.
    pub fn enqueue(&mut self, q: Queued, max: usize) {
        self.queue.push_back(q);
        while self.queue.len() > max {
            let old = self.queue.pop_front().expect("not empty");
            self.dropped += 1;
            tracing::warn!(slot = old.slot, what = %old.what, "reading queue full: the oldest reading is dropped");
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_survives_a_restart_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        for s in 0..(HISTORY_SLOTS as u64 + 10) {
            j.record(s, SlotRecord::default());
        }
        let kind = TxKind::SubmitReading {
            slot: 7,
            import_mwh: 1,
            export_mwh: 2,
        };
        for _ in 0..5 {
            j.enqueue(Queued::new(7, "meter", &kind), 3);
        }
        j.save().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.history.len(), HISTORY_SLOTS);
        assert_eq!(*j.history.keys().next().unwrap(), 10);
        assert_eq!((j.queue.len(), j.dropped), (3, 2));
        assert_eq!(j.queue[0].kind().unwrap(), kind);
        std::fs::write(dir.path().join("journal.json"), b"{").unwrap();
        let e = Journal::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("damaged"), "{e}");
    }
}
