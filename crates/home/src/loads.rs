//! Shiftable loads switched on and off: a boiler or a heat pump behind a relay, over MQTT (a
//! Tasmota, Shelly or ESPHome switch: one command topic, `ON`/`OFF` payloads by default) or a
//! Modbus coil. The plan gives each load its power per slot; a switch has two states, so the load
//! runs from the slot's start until the slot's planned energy is done (its rated power times the
//! time on), then waits for the next slot. Without a plan it runs as its own timer would: on in
//! its window until the day's energy is done.
//!
//! A switch cannot revert by itself over these protocols; the home repeats the command every
//! third of the reversion time, and the device's own auto-off timer (Tasmota `PulseTime`, Shelly
//! `auto_off`, a PLC's watchdog on the coil) set to the reversion time turns it off if the home
//! stops (the README says so).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridmesh_client::agent_runner::LoadSpec;
use rumqttc::{AsyncClient, QoS};
use tokio_modbus::client::{Context, Writer};
use tokio_modbus::Slave;

use crate::config::{LoadConfig, SwitchConfig};
use crate::devices::DeviceStatus;

/// How long a Modbus request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Between two connection attempts to a coil that failed.
const RECONNECT_EVERY: Duration = Duration::from_secs(3);
/// A slot's planned energy this close to done counts as done, kWh.
const DONE_KWH: f64 = 0.005;

enum Switch {
    Mqtt {
        client: AsyncClient,
        topic: String,
        on: String,
        off: String,
        broker_error: Arc<Mutex<Option<String>>>,
    },
    Coil {
        addr: SocketAddr,
        unit: u8,
        coil: u16,
        ctx: Option<Context>,
        next_try: Instant,
    },
}

/// One shiftable load and its switch.
pub struct Load {
    pub spec: LoadSpec,
    switch: Switch,
    /// The state last commanded and when (real time).
    commanded: Option<(bool, Instant)>,
    /// Energy run in its window of `day` so far, and in the slot running, kWh (rated power
    /// times the time on).
    pub done_kwh: f64,
    day: u64,
    slot_kwh: (u64, f64),
    last_ms: Option<u64>,
    last_error: Option<String>,
}

impl Load {
    /// Connects the switch (MQTT in the background on the current Tokio runtime).
    pub fn new(spec: LoadSpec, cfg: &LoadConfig) -> Load {
        let switch = match &cfg.switch {
            SwitchConfig::Mqtt {
                broker,
                topic,
                on,
                off,
                username,
                password,
            } => {
                let (client, broker_error) = crate::heat_pump::connect_mqtt(
                    broker,
                    &format!("gridmesh-home-load-{}", spec.name),
                    username.clone().zip(password.clone()),
                    None,
                    |_| {},
                );
                Switch::Mqtt {
                    client,
                    topic: topic.clone(),
                    on: on.clone(),
                    off: off.clone(),
                    broker_error,
                }
            }
            SwitchConfig::Coil {
                address,
                unit,
                coil,
            } => Switch::Coil {
                addr: *address,
                unit: *unit,
                coil: *coil,
                ctx: None,
                next_try: Instant::now(),
            },
        };
        Load {
            spec,
            switch,
            commanded: None,
            done_kwh: 0.0,
            day: 0,
            slot_kwh: (0, 0.0),
            last_ms: None,
            last_error: None,
        }
    }

    /// Counts the energy run since the last poll (on at its rated power) at chain time `now_ms`;
    /// returns it, kWh.
    pub fn account(&mut self, now_ms: u64) -> f64 {
        let slot = gridmesh_types::units::slot_of(now_ms.saturating_sub(1));
        let kwh = match (self.last_ms, self.commanded) {
            (Some(last), Some((true, _))) => {
                self.spec.power_kw * now_ms.saturating_sub(last) as f64 / 3_600_000.0
            }
            _ => 0.0,
        };
        self.last_ms = Some(now_ms);
        if slot / 96 != self.day {
            self.day = slot / 96;
            self.done_kwh = 0.0;
        }
        if self.slot_kwh.0 != slot {
            self.slot_kwh = (slot, 0.0);
        }
        // Energy counts toward the window it ran in.
        let (from, to) = self.spec.window(slot);
        if (from..to).contains(&slot) {
            self.done_kwh += kwh;
        }
        self.slot_kwh.1 += kwh;
        kwh
    }

    /// Whether the load should run now: following the plan's power for the slot running (on
    /// until the slot's planned energy is done), or without a plan on in its window until the
    /// day's energy is done.
    pub fn wanted(&self, planned_kw: Option<f64>, slot: u64) -> bool {
        match planned_kw {
            Some(kw) => kw * 0.25 > self.slot_kwh.1 + DONE_KWH,
            None => {
                let (from, to) = self.spec.window(slot);
                (from..to).contains(&slot) && self.done_kwh + DONE_KWH < self.spec.energy_kwh
            }
        }
    }

    /// Switches the load to `on` when that changes, and repeats the command after `refresh`.
    pub async fn drive(&mut self, on: bool, refresh: Duration) {
        let due = self
            .commanded
            .is_none_or(|(was, at)| was != on || at.elapsed() >= refresh);
        if !due {
            return;
        }
        let r = match &mut self.switch {
            Switch::Mqtt {
                client,
                topic,
                on: on_payload,
                off,
                broker_error,
            } => {
                let payload = if on { on_payload.clone() } else { off.clone() };
                match broker_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                {
                    Some(e) => Err(e),
                    None => client
                        .try_publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
                        .map_err(|e| format!("publishing: {e}")),
                }
            }
            Switch::Coil {
                addr,
                unit,
                coil,
                ctx,
                next_try,
            } => write_coil(ctx, next_try, *addr, *unit, *coil, on).await,
        };
        match r {
            Ok(()) => {
                if self.commanded.is_none_or(|(was, _)| was != on) {
                    tracing::debug!(load = %self.spec.name, on, "switched");
                }
                self.commanded = Some((on, Instant::now()));
                self.last_error = None;
            }
            Err(e) => {
                if self.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(load = %self.spec.name, error = %e, "cannot switch the load");
                }
                self.last_error = Some(e);
                // Not known to run: count nothing until a command lands.
                self.commanded = None;
            }
        }
    }

    pub fn status(&self) -> DeviceStatus {
        DeviceStatus {
            connected: self.commanded.is_some(),
            error: self.last_error.clone(),
            power_kw: self
                .commanded
                .map(|(on, _)| if on { self.spec.power_kw } else { 0.0 }),
            soc_pct: None,
            out_register_kwh: None,
            in_register_kwh: Some(self.done_kwh),
        }
    }
}

async fn write_coil(
    ctx: &mut Option<Context>,
    next_try: &mut Instant,
    addr: SocketAddr,
    unit: u8,
    coil: u16,
    on: bool,
) -> Result<(), String> {
    if ctx.is_none() {
        if Instant::now() < *next_try {
            return Err(format!("{addr} is not connected"));
        }
        *next_try = Instant::now() + RECONNECT_EVERY;
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio_modbus::client::tcp::connect_slave(addr, Slave(unit)),
        )
        .await
        {
            Ok(Ok(c)) => *ctx = Some(c),
            Ok(Err(e)) => return Err(format!("connecting to {addr}: {e}")),
            Err(_) => return Err(format!("connecting to {addr}: no answer within 3 s")),
        }
    }
    let c = ctx.as_mut().expect("just connected");
    let r = match tokio::time::timeout(REQUEST_TIMEOUT, c.write_single_coil(coil, on)).await {
        Err(_) => Err(format!("coil {coil} at {addr}: no answer within 3 s")),
        Ok(Err(e)) => Err(format!("coil {coil} at {addr}: {e}")),
        Ok(Ok(Err(code))) => Err(format!("coil {coil} at {addr}: exception {code:?}")),
        Ok(Ok(Ok(()))) => Ok(()),
    };
    if r.is_err() {
        *ctx = None;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmesh_types::units::slot_start_ms;

    fn boiler() -> Load {
        let spec = LoadSpec {
            name: "boiler".into(),
            power_kw: 2.0,
            energy_kwh: 3.0,
            earliest_hour: 10,
            latest_hour: 16,
        };
        let cfg = LoadConfig {
            name: "boiler".into(),
            switch: SwitchConfig::Coil {
                address: "127.0.0.1:1".parse().unwrap(),
                unit: 1,
                coil: 0,
            },
        };
        Load::new(spec, &cfg)
    }

    #[test]
    fn a_load_runs_until_its_slots_planned_energy_is_done() {
        let mut l = boiler();
        // Slot 40 of a day (10:00): planned 1.2 kW, 0.3 kWh, at 2 kW: on for 9 minutes.
        let slot = 96 * 1_000 + 40;
        let t0 = slot_start_ms(slot);
        l.account(t0 + 1);
        assert!(l.wanted(Some(1.2), slot));
        l.commanded = Some((true, Instant::now()));
        l.account(t0 + 1 + 8 * 60_000);
        assert!(l.wanted(Some(1.2), slot), "{}", l.slot_kwh.1);
        l.account(t0 + 1 + 9 * 60_000);
        assert!(!l.wanted(Some(1.2), slot), "{}", l.slot_kwh.1);
        assert!((l.done_kwh - 0.3).abs() < 1e-6, "{}", l.done_kwh);
        // Without a plan: on in its window until the day's 3 kWh are done, off outside it.
        assert!(l.wanted(None, slot));
        l.done_kwh = 3.0;
        assert!(!l.wanted(None, slot));
        l.done_kwh = 0.0;
        assert!(!l.wanted(None, 96 * 1_000 + 70));
        // A new day starts at nothing done.
        l.commanded = Some((false, Instant::now()));
        l.account(slot_start_ms(96 * 1_001 + 40) + 1);
        assert_eq!(l.done_kwh, 0.0);
    }
}
