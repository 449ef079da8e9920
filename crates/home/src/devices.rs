//! The home's devices as the loop sees them: a SunSpec connection each, made again after a
//! failure (at most every few seconds), every request bounded by the gateway's timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gridmesh_gateway::sunspec::{Measurement, SunSpecDevice, SunSpecError};
use gridmesh_ledger::Keypair;
use serde::Serialize;

/// Real time between two attempts to reach a device that failed.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(3);
/// The controls in force are read every this many polls (they change only when written).
pub const CONTROLS_EVERY: u64 = 10;

/// One SunSpec device.
pub struct Device {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub unit: u8,
    /// Its own key, if it signs (PV, battery).
    pub key: Option<Keypair>,
    conn: Option<SunSpecDevice>,
    next_try: Instant,
    pub last_error: Option<String>,
    /// The last measurement, and the chain time it was taken.
    pub last: Option<(u64, Measurement)>,
    /// Readings taken (the controls are read with every [`CONTROLS_EVERY`]-th).
    polls: u64,
}

/// A device's state for `home status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeviceStatus {
    pub connected: bool,
    pub error: Option<String>,
    pub power_kw: Option<f64>,
    pub soc_pct: Option<f64>,
    /// The register readings are taken from, kWh.
    pub out_register_kwh: Option<f64>,
    pub in_register_kwh: Option<f64>,
}

impl Device {
    pub fn new(name: &'static str, addr: SocketAddr, unit: u8, key: Option<Keypair>) -> Device {
        Device {
            name,
            addr,
            unit,
            key,
            conn: None,
            next_try: Instant::now(),
            last_error: None,
            last: None,
            polls: 0,
        }
    }

    async fn connected(&mut self) -> Result<&mut SunSpecDevice, String> {
        if self.conn.is_none() {
            if Instant::now() < self.next_try {
                return Err(self
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "not connected".into()));
            }
            self.next_try = Instant::now() + RECONNECT_EVERY;
            match SunSpecDevice::connect(self.addr, self.unit).await {
                Ok(d) => {
                    tracing::info!(device = self.name, addr = %self.addr, "connected");
                    self.conn = Some(d);
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    fn failed(&mut self, e: SunSpecError) -> String {
        let msg = format!("{}: {e}", self.name);
        if self.last_error.as_deref() != Some(msg.as_str()) {
            tracing::warn!(device = self.name, error = %e, "device failed");
        }
        self.conn = None;
        self.last_error = Some(msg.clone());
        msg
    }

    /// Reads the device; a failure drops the connection (made again later) and is remembered.
    /// The controls in force (models 123 and 124) are read every [`CONTROLS_EVERY`] polls; in
    /// between, their last values stand.
    pub async fn measure(&mut self, time_ms: u64) -> Result<Measurement, String> {
        let full = self.polls % CONTROLS_EVERY == 0;
        self.polls += 1;
        let last = self.last.as_ref().map(|(_, m)| m.clone());
        let dev = self.connected().await?;
        let r = if full {
            dev.measure().await
        } else {
            dev.measure_changing().await.map(|mut m| {
                if let Some(l) = last {
                    m.storage_control = l.storage_control;
                    m.charge_max_w = l.charge_max_w;
                    m.power_limit_pct = l.power_limit_pct;
                }
                m
            })
        };
        match r {
            Ok(m) => {
                self.last_error = None;
                self.last = Some((time_ms, m.clone()));
                Ok(m)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Holds a battery at `power_kw` (positive discharging) for `revert`.
    pub async fn hold_battery(&mut self, power_kw: f64, revert: Duration) -> Result<(), String> {
        let dev = self.connected().await?;
        match dev.set_storage_setpoint(power_kw * 1_000.0, revert).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Limits a PV inverter to `pct` of its rating for `revert`.
    pub async fn limit_pv(&mut self, pct: f64, revert: Duration) -> Result<(), String> {
        let dev = self.connected().await?;
        match dev.set_power_limit(pct, revert).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }

    pub fn status(&self) -> DeviceStatus {
        let m = self.last.as_ref().map(|(_, m)| m);
        DeviceStatus {
            connected: self.conn.is_some(),
            error: self.last_error.clone(),
            power_kw: m.and_then(|m| m.power_w).map(|w| f64::from(w) / 1_000.0),
            soc_pct: m.and_then(|m| m.soc_pct),
            out_register_kwh: m.and_then(|m| m.out_register_mwh).map(|v| v as f64 / 1e6),
            in_register_kwh: m.and_then(|m| m.in_register_mwh).map(|v| v as f64 / 1e6),
        }
    }
}
