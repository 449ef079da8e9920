//! A heat pump heating a thermal store (the building, or the hot-water tank): driven to the
//! plan's power within the owner's band, by a switch (on for the share of each slot the plan's
//! energy needs, as a shiftable load's switch) or by a power setpoint (watts published on a
//! topic). The band comes first: below its low edge the heat pump runs at full power whatever
//! the plan says (0.15 K below: a switch that runs a slot's energy first dips a little before
//! the slot's end), above its high edge it stops. Without a plan it is the thermostat: on below
//! the low edge plus a margin. The store's temperature is its sensor's (a room's, a tank's, over
//! MQTT) where the home has one and it is fresh, else the store's model the home keeps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridmesh_agent::thermal::ThermalStore;
use gridmesh_client::agent_runner::LoadSpec;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::{HeatPumpDrive, LoadConfig, SensorConfig};
use crate::devices::DeviceStatus;
use crate::loads::Load;

/// A sensor's reading older than this (real time) is not used.
const INDOOR_STALE: Duration = Duration::from_secs(600);
/// The thermostat without a plan heats below the band's low edge plus this, K.
const THERMOSTAT_MARGIN_K: f64 = 0.5;
/// Below the band's low edge by this (K) the heat pump runs at full power whatever the plan
/// says. A plan holds the edge at each slot's end; a switch that runs the slot's energy first
/// and then rests dips a little below it before the slot ends, which is no reason to override.
const GUARD_BELOW_K: f64 = 0.15;

type Shared<T> = Arc<Mutex<T>>;
/// A sensor's last reading (°C, when it came), and its broker's error.
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

/// What a heat pump heats: its name for people and in MQTT client ids, what its sensor
/// measures, and the temperatures a reading of it may take, °C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heats {
    /// The building (`heat_pump`, a room sensor).
    Space,
    /// The hot-water tank (`hot_water`, a tank sensor).
    Water,
}

impl Heats {
    fn name(self) -> &'static str {
        match self {
            Heats::Space => "heat_pump",
            Heats::Water => "hot_water",
        }
    }

    fn sensor(self) -> &'static str {
        match self {
            Heats::Space => "room sensor",
            Heats::Water => "tank sensor",
        }
    }

    fn readings_c(self) -> std::ops::RangeInclusive<f64> {
        match self {
            Heats::Space => -40.0..=60.0,
            Heats::Water => 0.0..=100.0,
        }
    }
}

/// A heat pump and what the home knows of its store's temperature.
pub struct HeatPump {
    pub heats: Heats,
    /// The band it keeps its store in, °C, and its electrical rating, kW.
    pub band_c: [f64; 2],
    pub max_power_kw: f64,
    drive: Drive,
    /// The sensor's last reading (°C, when), and why it has none.
    sensor: Option<Sensor>,
    /// Its power at the last observation (kW) and when (chain ms): the model's input.
    last: Option<(f64, u64)>,
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
    /// Connects its switch or setpoint topic and its sensor (MQTT in the background on the
    /// current Tokio runtime).
    pub fn new(
        heats: Heats,
        (band_c, max_power_kw): ([f64; 2], f64),
        (drive, sensor_cfg): (&HeatPumpDrive, Option<&SensorConfig>),
        id: &str,
    ) -> HeatPump {
        let name = heats.name();
        let drive = match drive {
            HeatPumpDrive::Switch(switch) => {
                // A switched load of the heat pump's rating, its energy counted slot by slot.
                let load = LoadSpec {
                    name: name.into(),
                    power_kw: max_power_kw,
                    energy_kwh: 0.0,
                    earliest_hour: 0,
                    latest_hour: 24,
                };
                Drive::Switch(Load::new(
                    load,
                    &LoadConfig {
                        name: name.into(),
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
                    &format!("gridmesh-home-{}-{id}", name.replace('_', "-")),
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
        let sensor = sensor_cfg.map(|s| sensor(s, heats, id));
        HeatPump {
            heats,
            band_c,
            max_power_kw,
            drive,
            sensor,
            last: None,
        }
    }

    /// The sensor's temperature, °C, if it has a fresh one.
    pub fn measured_c(&self) -> Option<f64> {
        let (value, _) = self.sensor.as_ref()?;
        let v = *lock(value);
        v.filter(|(_, at)| at.elapsed() < INDOOR_STALE)
            .map(|(c, _)| c)
    }

    /// At chain time `now_ms`: the energy drawn since the last observation (kWh), the power it
    /// runs at now (kW), and its store's temperature now (°C): the sensor's while fresh, else
    /// the store's model from `last_c` (`model(last_c)`, its first slot now) run on with what
    /// the heat pump drew since the last observation.
    pub fn observe(
        &mut self,
        now_ms: u64,
        last_c: f64,
        model: impl FnOnce(f64) -> ThermalStore,
    ) -> (f64, f64, f64) {
        let (kwh, kw) = self.account(now_ms);
        let temperature_c = match (self.measured_c(), self.last) {
            (Some(c), _) => c,
            (None, Some((kw_then, at))) if now_ms > at => {
                let hours = (now_ms - at) as f64 / 3_600_000.0;
                model(last_c).after(0, last_c, kw_then, hours)
            }
            (None, _) => last_c,
        };
        self.last = Some((kw, now_ms));
        (kwh, kw, temperature_c)
    }

    /// The energy drawn since the last call at chain time `now_ms` (kWh), and the power it
    /// runs at now (kW): the switch's rating while on, or the setpoint published.
    fn account(&mut self, now_ms: u64) -> (f64, f64) {
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
    /// or the thermostat's without one, within the band at its store's temperature `now_c`.
    pub fn wanted_kw(&self, planned_kw: Option<f64>, now_c: f64) -> f64 {
        let [low, high] = self.band_c;
        let full = self.max_power_kw;
        if now_c < low - GUARD_BELOW_K {
            return full;
        }
        if now_c > high {
            return 0.0;
        }
        match planned_kw {
            Some(kw) => kw.clamp(0.0, full),
            None if now_c < low + THERMOSTAT_MARGIN_K => full,
            None => 0.0,
        }
    }

    /// The power the heat pump will draw once driven to `kw` in `slot` (kW): the switch's
    /// rating or nothing, or the setpoint. The home tells its battery before the meter sees it.
    pub fn power_after(&self, kw: f64, slot: u64) -> f64 {
        match &self.drive {
            Drive::Switch(load) if switched_on(self.max_power_kw, load, kw, slot) => {
                self.max_power_kw
            }
            Drive::Switch(_) => 0.0,
            Drive::Setpoint { .. } => kw,
        }
    }

    /// Drives the heat pump to `kw` in `slot`: a switch on until the slot's energy at `kw` is
    /// done (on throughout at full power), a setpoint published; repeated after `refresh`.
    pub async fn drive(&mut self, kw: f64, slot: u64, refresh: Duration) {
        let max_kw = self.max_power_kw;
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
                            let device = self.heats.name();
                            tracing::warn!(error = %e, device, "cannot set the heat pump's power");
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
            .sensor
            .as_ref()
            .and_then(|(_, e)| lock(e).clone())
            .map(|e| format!("{}: {e}", self.heats.sensor()));
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

/// Subscribes to a sensor: each message's number (°C, within what `heats` can read) with when
/// it came.
fn sensor(cfg: &SensorConfig, heats: Heats, id: &str) -> Sensor {
    let value: Shared<Option<(f64, Instant)>> = Arc::new(Mutex::new(None));
    let into = value.clone();
    let field = cfg.field.clone();
    let topic = cfg.topic.clone();
    let (_client, error) = connect_mqtt(
        &cfg.broker,
        &match heats {
            Heats::Space => format!("gridmesh-home-indoor-{id}"),
            Heats::Water => format!("gridmesh-home-tank-{id}"),
        },
        cfg.username.clone().zip(cfg.password.clone()),
        Some(cfg.topic.clone()),
        move |payload| {
            let text = String::from_utf8_lossy(payload);
            let reading = crate::mqtt_meter::payload_value(&text, field.as_deref())
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|c| heats.readings_c().contains(c));
            match reading {
                Some(c) => *lock(&into) = Some((c, Instant::now())),
                None => tracing::debug!(%topic, payload = %text, "not a temperature it can have"),
            }
        },
    );
    (value, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SwitchConfig;
    use gridmesh_client::agent_runner::HotWaterSpec;

    fn pump(heats: Heats, band_c: [f64; 2], max_kw: f64) -> HeatPump {
        let drive = HeatPumpDrive::Switch(SwitchConfig::Coil {
            address: "127.0.0.1:1".parse().unwrap(),
            unit: 1,
            coil: 0,
        });
        HeatPump::new(heats, (band_c, max_kw), (&drive, None), "test")
    }

    #[test]
    fn the_band_comes_before_the_plan_and_the_thermostat_heats_without_one() {
        let p = pump(Heats::Space, [20.0, 22.0], 3.0);
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

    /// Without a sensor a tank's temperature is its model's, run on from the last observation
    /// with the power the heat pump ran at (it cools by the morning's draw with the heat pump
    /// off); the band holds it as it holds a room.
    #[test]
    fn a_tank_without_a_sensor_follows_its_model_and_its_band() {
        let spec = HotWaterSpec {
            litres: 200.0,
            kwh_per_day: 6.0,
            band_c: [45.0, 60.0],
            max_power_kw: 2.0,
        };
        let mut p = pump(Heats::Water, spec.band_c, spec.max_power_kw);
        let outdoor = [5.0];
        // 06:00 UTC, in the morning's draw (slot 24).
        let at = |h: f64| (24.0 * 900_000.0 + h * 3_600_000.0) as u64;
        let model = |c| spec.store(&outdoor, 24, c);
        let (kwh, kw, c) = p.observe(at(0.0), 55.0, model);
        assert_eq!(
            (kwh, kw, c),
            (0.0, 0.0, 55.0),
            "nothing known before the first look"
        );
        // Half an hour off in the draw: 0.61 kWh drawn (and a little lost) from 200 l, 2.6 K.
        let (_, _, cooled) = p.observe(at(0.5), c, model);
        assert!((52.2..52.5).contains(&cooled), "{cooled}");
        // The same half hour at 2 kW (a COP of 2.5 at 5 °C): 2.5 kWh in, 0.6 out, 8 K up.
        let heated = model(55.0).after(0, 55.0, 2.0, 0.5);
        assert!((62.5..63.5).contains(&heated), "{heated}");
        // Off is not what the band allows below its low edge; the thermostat heats near it.
        assert_eq!(p.wanted_kw(Some(0.0), 44.8), 2.0);
        assert_eq!(p.wanted_kw(None, 45.3), 2.0);
        assert_eq!(p.wanted_kw(Some(1.5), 61.0), 0.0);
        // A tank sensor's readings go to 100 °C, a room's to 60 °C.
        assert!(Heats::Water.readings_c().contains(&75.0));
        assert!(!Heats::Space.readings_c().contains(&75.0));
    }
}
