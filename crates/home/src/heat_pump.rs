//! The heat pump: driven to the plan's power within the owner's comfort band, by a switch (on
//! for the share of each slot the plan's energy needs, as a shiftable load's switch) or by a
//! power setpoint (watts published on a topic). The band comes first: below its low edge the
//! heat pump runs at full power whatever the plan says (0.15 K below: a switch that runs a slot's
//! energy first dips a little before the slot's end), above its high edge it stops. Without a
//! plan it is the thermostat: on below the low edge plus a margin. The indoor temperature is the
//! room sensor's where the home has one (over MQTT) and it is fresh, else the building's model
//! the home keeps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridmesh_client::agent_runner::{HeatPumpSpec, LoadSpec};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::{HeatPumpConfig, HeatPumpDrive, LoadConfig, SensorConfig};
use crate::devices::DeviceStatus;
use crate::loads::Load;

/// A room sensor's reading older than this (real time) is not used.
const INDOOR_STALE: Duration = Duration::from_secs(600);
/// The thermostat without a plan heats below the band's low edge plus this, K.
const THERMOSTAT_MARGIN_K: f64 = 0.5;
/// Below the band's low edge by this (K) the heat pump runs at full power whatever the plan
/// says. A plan holds the edge at each slot's end; a switch that runs the slot's energy first
/// and then rests dips a little below it before the slot ends, which is no reason to override.
const GUARD_BELOW_K: f64 = 0.15;

type Shared<T> = Arc<Mutex<T>>;
/// A room sensor's last reading (°C, when it came), and its broker's error.
type Sensor = (Shared<Option<(f64, Instant)>>, Shared<Option<String>>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Drive {
    Switch(Load),
    Setpoint {
        client: AsyncClient,
        topic: String,
        broker_error: Shared<Option<String>>,
        /// The power last published (kW) and when (real time).
        commanded: Option<(f64, Instant)>,
        last_ms: Option<u64>,
        last_error: Option<String>,
    },
}

/// The heat pump and what the home knows of its building's temperature.
pub struct HeatPump {
    pub spec: HeatPumpSpec,
    drive: Drive,
    /// The room sensor's last reading (°C, when), and why it has none.
    indoor: Option<Sensor>,
}

/// A client to `broker` (`host:port`, checked) whose event loop runs on the current Tokio
/// runtime: on each connection it subscribes to `subscribe`, and `on_publish` takes each message.
/// The shared error is the broker's last, `None` while connected.
pub(crate) fn connect_mqtt(
    broker: &str,
    id: &str,
    credentials: Option<(String, String)>,
    subscribe: Option<String>,
    on_publish: impl Fn(&[u8]) + Send + 'static,
) -> (AsyncClient, Shared<Option<String>>) {
    let (host, port) = crate::config::host_port(broker).expect("checked: host:port");
    let mut opts = MqttOptions::new(id, host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = credentials {
        opts.set_credentials(u, p);
    }
    let (client, mut events) = AsyncClient::new(opts, 16);
    let error = Arc::new(Mutex::new(Some("connecting".to_string())));
    let status = error.clone();
    let sub = client.clone();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    *lock(&status) = None;
                    if let Some(topic) = &subscribe {
                        let _ = sub.try_subscribe(topic.as_str(), QoS::AtMostOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&p.payload),
                Ok(_) => {}
                Err(e) => {
                    *lock(&status) = Some(format!("its broker: {e}"));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    });
    (client, error)
}

impl HeatPump {
    /// Connects its switch or setpoint topic and its room sensor (MQTT in the background on
    /// the current Tokio runtime).
    pub fn new(spec: HeatPumpSpec, cfg: &HeatPumpConfig, id: &str) -> HeatPump {
        let drive = match &cfg.drive {
            HeatPumpDrive::Switch(switch) => {
                // A switched load of the heat pump's rating, its energy counted slot by slot.
                let load = LoadSpec {
                    name: "heat_pump".into(),
                    power_kw: spec.max_power_kw,
                    energy_kwh: 0.0,
                    earliest_hour: 0,
                    latest_hour: 24,
                };
                Drive::Switch(Load::new(
                    load,
                    &LoadConfig {
                        name: "heat_pump".into(),
                        switch: switch.clone(),
                    },
                ))
            }
            HeatPumpDrive::Setpoint {
                broker,
                topic,
                username,
                password,
            } => {
                let (client, broker_error) = connect_mqtt(
                    broker,
                    &format!("gridmesh-home-heat-pump-{id}"),
                    username.clone().zip(password.clone()),
                    None,
                    |_| {},
                );
                Drive::Setpoint {
                    client,
                    topic: topic.clone(),
                    broker_error,
                    commanded: None,
                    last_ms: None,
                    last_error: None,
                }
            }
        };
        let indoor = cfg.indoor.as_ref().map(|s| sensor(s, id));
        HeatPump {
            spec,
            drive,
            indoor,
        }
    }

    /// The room sensor's temperature, °C, if it has a fresh one.
    pub fn measured_c(&self) -> Option<f64> {
        let (value, _) = self.indoor.as_ref()?;
        let v = *lock(value);
        v.filter(|(_, at)| at.elapsed() < INDOOR_STALE)
            .map(|(c, _)| c)
    }

    /// The energy drawn since the last call at chain time `now_ms` (kWh), and the power it
    /// runs at now (kW): the switch's rating while on, or the setpoint published.
    pub fn account(&mut self, now_ms: u64) -> (f64, f64) {
        match &mut self.drive {
            Drive::Switch(load) => {
                let kwh = load.account(now_ms);
                let on = load.status().power_kw.unwrap_or(0.0);
                (kwh, on)
            }
            Drive::Setpoint {
                commanded, last_ms, ..
            } => {
                let kw = commanded.map_or(0.0, |(kw, _)| kw);
                let kwh = last_ms.map_or(0.0, |last| {
                    kw * now_ms.saturating_sub(last) as f64 / 3_600_000.0
                });
                *last_ms = Some(now_ms);
                (kwh, kw)
            }
        }
    }

    /// The power the heat pump should run at now (kW): the plan's for the slot (`planned_kw`),
    /// or the thermostat's without one, within the band at the indoor temperature `indoor_c`.
    pub fn wanted_kw(&self, planned_kw: Option<f64>, indoor_c: f64) -> f64 {
        let [low, high] = self.spec.comfort_c;
        let full = self.spec.max_power_kw;
        if indoor_c < low - GUARD_BELOW_K {
            return full;
        }
        if indoor_c > high {
            return 0.0;
        }
        match planned_kw {
            Some(kw) => kw.clamp(0.0, full),
            None if indoor_c < low + THERMOSTAT_MARGIN_K => full,
            None => 0.0,
        }
    }

    /// The power the heat pump will draw once driven to `kw` in `slot` (kW): the switch's
    /// rating or nothing, or the setpoint. The home tells its battery before the meter sees it.
    pub fn power_after(&self, kw: f64, slot: u64) -> f64 {
        match &self.drive {
            Drive::Switch(load) if switched_on(self.spec.max_power_kw, load, kw, slot) => {
                self.spec.max_power_kw
            }
            Drive::Switch(_) => 0.0,
            Drive::Setpoint { .. } => kw,
        }
    }

    /// Drives the heat pump to `kw` in `slot`: a switch on until the slot's energy at `kw` is
    /// done (on throughout at full power), a setpoint published; repeated after `refresh`.
    pub async fn drive(&mut self, kw: f64, slot: u64, refresh: Duration) {
        let max_kw = self.spec.max_power_kw;
        match &mut self.drive {
            Drive::Switch(load) => {
                let on = switched_on(max_kw, load, kw, slot);
                load.drive(on, refresh).await;
            }
            Drive::Setpoint {
                client,
                topic,
                broker_error,
                commanded,
                last_error,
                ..
            } => {
                let due = commanded
                    .is_none_or(|(was, at)| (was - kw).abs() > 0.01 || at.elapsed() >= refresh);
                if !due {
                    return;
                }
                let watts = format!("{}", (kw * 1000.0).round());
                let r = match lock(broker_error).clone() {
                    Some(e) => Err(e),
                    None => client
                        .try_publish(topic.as_str(), QoS::AtLeastOnce, false, watts)
                        .map_err(|e| format!("publishing: {e}")),
                };
                match r {
                    Ok(()) => {
                        *commanded = Some((kw, Instant::now()));
                        *last_error = None;
                    }
                    Err(e) => {
                        if last_error.as_deref() != Some(e.as_str()) {
                            tracing::warn!(error = %e, "cannot set the heat pump's power");
                        }
                        *last_error = Some(e);
                        // Not known to run at any power until a setpoint lands.
                        *commanded = None;
                    }
                }
            }
        }
    }

    pub fn status(&self) -> DeviceStatus {
        let sensor_error = self
            .indoor
            .as_ref()
            .and_then(|(_, e)| lock(e).clone())
            .map(|e| format!("room sensor: {e}"));
        match &self.drive {
            Drive::Switch(load) => {
                let mut s = load.status();
                s.in_register_kwh = None;
                s.error = s.error.or(sensor_error);
                s
            }
            Drive::Setpoint {
                commanded,
                last_error,
                ..
            } => DeviceStatus {
                connected: commanded.is_some(),
                error: last_error.clone().or(sensor_error),
                power_kw: commanded.map(|(kw, _)| kw),
                soc_pct: None,
                out_register_kwh: None,
                in_register_kwh: None,
            },
        }
    }
}

/// Whether a switch should be on for `kw` in `slot`: until the slot's energy at `kw` is done,
/// throughout at full power (`max_kw`).
fn switched_on(max_kw: f64, load: &Load, kw: f64, slot: u64) -> bool {
    kw >= max_kw - 1e-9 || load.wanted(Some(kw), slot)
}

/// Subscribes to a room sensor: each message's number (°C) with when it came.
fn sensor(cfg: &SensorConfig, id: &str) -> Sensor {
    let value: Shared<Option<(f64, Instant)>> = Arc::new(Mutex::new(None));
    let into = value.clone();
    let field = cfg.field.clone();
    let topic = cfg.topic.clone();
    let (_client, error) = connect_mqtt(
        &cfg.broker,
        &format!("gridmesh-home-indoor-{id}"),
        cfg.username.clone().zip(cfg.password.clone()),
        Some(cfg.topic.clone()),
        move |payload| {
            let text = String::from_utf8_lossy(payload);
            let reading = crate::mqtt_meter::payload_value(&text, field.as_deref())
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|c| (-40.0..=60.0).contains(c));
            match reading {
                Some(c) => *lock(&into) = Some((c, Instant::now())),
                None => tracing::debug!(%topic, payload = %text, "not a room temperature"),
            }
        },
    );
    (value, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SwitchConfig;
    use gridmesh_agent::thermal::Insulation;

    fn pump() -> HeatPump {
        let spec = HeatPumpSpec {
            floor_m2: 120.0,
            insulation: Insulation::Average,
            max_power_kw: 3.0,
            comfort_c: [20.0, 22.0],
            gains_kw: 0.3,
        };
        let cfg = HeatPumpConfig {
            drive: HeatPumpDrive::Switch(SwitchConfig::Coil {
                address: "127.0.0.1:1".parse().unwrap(),
                unit: 1,
                coil: 0,
            }),
            indoor: None,
        };
        HeatPump::new(spec, &cfg, "test")
    }

    #[test]
    fn the_band_comes_before_the_plan_and_the_thermostat_heats_without_one() {
        let p = pump();
        // Within the band: the plan's power, within the rating.
        assert_eq!(p.wanted_kw(Some(1.2), 21.0), 1.2);
        assert_eq!(p.wanted_kw(Some(9.0), 21.0), 3.0);
        // Below the band: full power whatever the plan; above it: off.
        assert_eq!(p.wanted_kw(Some(0.0), 19.8), 3.0);
        assert_eq!(p.wanted_kw(Some(0.4), 19.9), 0.4);
        assert_eq!(p.wanted_kw(Some(2.0), 22.1), 0.0);
        // No plan: the thermostat, on near the low edge.
        assert_eq!(p.wanted_kw(None, 20.3), 3.0);
        assert_eq!(p.wanted_kw(None, 21.0), 0.0);
        // No sensor configured: nothing measured.
        assert_eq!(p.measured_c(), None);
    }
}
