//! The home's one configuration file (TOML): the node, the owner's key, the household the agent
//! plans for, where each device answers, and how hard the home holds its devices.
//!
//! Paths in the file are relative to the file's own directory. Every error names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gridmesh_client::agent_runner::HomeSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Parse {
        path: PathBuf,
        error: toml::de::Error,
    },
    #[error("{path}: `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HomeConfig {
    /// The community node's API, e.g. `http://192.168.1.10:8080`.
    pub node: String,
    /// The owner's account key: it signs the orders and the meter readings.
    pub key: PathBuf,
    /// Where the home keeps its telemetry, history, reading queue and status.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Chain milliseconds per real millisecond: 1 for a real home; more only for a virtual home
    /// on a time-scaled test node.
    #[serde(default = "one")]
    pub time_scale: u32,
    /// Real time between two looks at the devices, ms: readings, setpoints.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Real time between two looks at the market, ms: plans, orders, readings sent. Every 30 s
    /// by default: a gate closes minutes ahead of its slot, so an order is still kept current
    /// several times over.
    #[serde(default = "default_node_poll_ms")]
    pub node_poll_ms: u64,
    /// The household the agent plans for: location (the market area of the connection),
    /// yearly consumption (the cold-start profile), PV, battery, EV.
    pub home: HomeSpec,
    pub pv: Option<SunSpecConfig>,
    pub battery: Option<SunSpecConfig>,
    pub grid_meter: Option<GridMeterConfig>,
    /// The EV charger (OCPP 1.6J): it connects to the central system the home runs.
    pub ev: Option<EvChargerConfig>,
    /// The switches of the shiftable loads of `[[home.loads]]`, by name.
    #[serde(default)]
    pub loads: Vec<LoadConfig>,
    /// How the heat pump of `[home.heat_pump]` is driven, and its indoor temperature sensor.
    pub heat_pump: Option<HeatPumpConfig>,
    /// How the hot-water tank's heat pump of `[home.hot_water]` is driven, and its tank sensor.
    pub hot_water: Option<HotWaterConfig>,
    #[serde(default)]
    pub control: ControlConfig,
    /// The community gateway's MQTT broker (`host:port`): samples are also published there.
    pub mqtt: Option<String>,
    /// Show the home in Home Assistant (MQTT discovery).
    pub home_assistant: Option<HomeAssistantConfig>,
}

/// Home Assistant's MQTT broker.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// `host:port` of the broker HA's MQTT integration uses.
    pub mqtt: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// HA's discovery prefix.
    #[serde(default = "default_prefix")]
    pub discovery_prefix: String,
}

fn default_prefix() -> String {
    "homeassistant".into()
}

/// `host:port` as its host and port number; `None` for anything else.
pub fn host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    (!h.is_empty()).then_some(())?;
    Some((h.to_string(), p.parse().ok()?))
}

impl HomeAssistantConfig {
    /// The broker's host and port.
    pub fn broker(&self) -> (String, u16) {
        host_port(&self.mqtt).expect("checked: host:port")
    }
}

/// A SunSpec device on Modbus TCP.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SunSpecConfig {
    /// `host:port` of its Modbus TCP server.
    pub sunspec: SocketAddr,
    #[serde(default = "one_u8")]
    pub unit: u8,
    /// The device's own key (registered on the chain with `tx register-device --device-key`):
    /// it signs the device's samples and slot readings. A software key in the data dir; on a
    /// gateway with a secure element, the element's key file goes here instead.
    pub key: Option<PathBuf>,
}

/// The connection's meter: a SunSpec meter on Modbus TCP, or one published over MQTT.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GridMeterConfig {
    /// A SunSpec meter (models 201-204): positive W is import.
    pub sunspec: Option<SocketAddr>,
    #[serde(default = "one_u8")]
    pub unit: u8,
    /// A meter on MQTT: a P1/DSMR bridge or a Home Assistant sensor.
    pub mqtt: Option<MqttMeterConfig>,
}

/// A meter whose values come over MQTT, one topic each.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttMeterConfig {
    /// The broker, `host:port`.
    pub broker: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Topics whose registers add up to the energy imported (DSMR: tariff 1 and tariff 2).
    pub import_topics: Vec<String>,
    /// Topics whose registers add up to the energy exported.
    pub export_topics: Vec<String>,
    /// The net power, positive importing (without it, the power comes from the registers'
    /// change).
    pub power_topic: Option<String>,
    /// The field holding the value when payloads are JSON objects (`value`, `state`); without
    /// it a payload is the number itself.
    pub field: Option<String>,
    /// `kWh` or `Wh`.
    #[serde(default = "default_energy_unit")]
    pub energy_unit: String,
    /// `W` or `kW`.
    #[serde(default = "default_power_unit")]
    pub power_unit: String,
    /// A value older than this (real seconds) counts as missing.
    #[serde(default = "default_stale_s")]
    pub stale_s: u64,
}

fn default_energy_unit() -> String {
    "kWh".into()
}
fn default_power_unit() -> String {
    "W".into()
}
fn default_stale_s() -> u64 {
    60
}

impl MqttMeterConfig {
    /// The broker's host and port.
    pub fn broker(&self) -> (String, u16) {
        host_port(&self.broker).expect("checked: host:port")
    }

    /// Every topic it reads.
    pub fn topics(&self) -> Vec<String> {
        self.import_topics
            .iter()
            .chain(&self.export_topics)
            .chain(&self.power_topic)
            .cloned()
            .collect()
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if host_port(&self.broker).is_none() {
            return Err((
                "grid_meter.mqtt.broker",
                format!("{:?} is not host:port", self.broker),
            ));
        }
        for (key, topics) in [
            ("grid_meter.mqtt.import_topics", &self.import_topics),
            ("grid_meter.mqtt.export_topics", &self.export_topics),
        ] {
            if topics.is_empty() {
                return Err((key, "at least one topic".into()));
            }
        }
        for t in self.topics() {
            if t.is_empty() || t.contains(['+', '#']) {
                return Err((
                    "grid_meter.mqtt",
                    format!("{t:?} is not a topic to read (no wildcards)"),
                ));
            }
        }
        if !matches!(self.energy_unit.as_str(), "kWh" | "Wh") {
            return Err((
                "grid_meter.mqtt.energy_unit",
                format!("{:?} is not kWh or Wh", self.energy_unit),
            ));
        }
        if !matches!(self.power_unit.as_str(), "W" | "kW") {
            return Err((
                "grid_meter.mqtt.power_unit",
                format!("{:?} is not W or kW", self.power_unit),
            ));
        }
        if self.stale_s == 0 {
            return Err(("grid_meter.mqtt.stale_s", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// The home's EV charger. The home runs the OCPP 1.6J central system the charger connects to
/// (`ws://OCPP_LISTEN/ocpp/CHARGE_POINT`, subprotocol `ocpp1.6`): set that address in the
/// charger's OCPP settings. The plan goes to it as a `TxDefaultProfile`; a charger that answers
/// SmartCharging `NotSupported` is started and stopped instead.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvChargerConfig {
    /// Where the home's central system listens, e.g. `0.0.0.0:8887`.
    pub ocpp_listen: SocketAddr,
    /// The charger's charge point id (the last part of the URL it connects to).
    pub charge_point: String,
    /// The charger's own key (registered on the chain as an `ev-charger`): it signs the
    /// charger's meter values and slot readings.
    pub key: Option<PathBuf>,
    /// RFID tags the charger may start with; empty: any (the home's own charger).
    #[serde(default)]
    pub id_tags: Vec<String>,
    /// The tag a remote start names, for chargers that are started and stopped.
    #[serde(default = "default_remote_tag")]
    pub remote_tag: String,
    /// The EV's lowest charging rate, kW: the rate while the home has no plan to follow.
    #[serde(default = "default_ev_min_kw")]
    pub min_kw: f64,
    /// Phases and volts per phase, to turn a plan's kW into amperes for chargers that take
    /// current only.
    #[serde(default = "default_phases")]
    pub phases: u8,
    #[serde(default = "default_volts")]
    pub volts: f64,
}

fn default_remote_tag() -> String {
    "gridmesh-home".into()
}
fn default_ev_min_kw() -> f64 {
    // 6 A on one phase at 230 V: the least IEC 61851 allows.
    1.4
}
fn default_phases() -> u8 {
    3
}
fn default_volts() -> f64 {
    230.0
}

/// A shiftable load's switch (its needs are in `[[home.loads]]` under the same name).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(try_from = "RawLoad", into = "RawLoad")]
pub struct LoadConfig {
    pub name: String,
    pub switch: SwitchConfig,
}

/// How a load is switched.
#[derive(Clone, Debug, PartialEq)]
pub enum SwitchConfig {
    /// A command topic (Tasmota `cmnd/NAME/POWER`, a Shelly or ESPHome switch).
    Mqtt {
        broker: String,
        topic: String,
        on: String,
        off: String,
        username: Option<String>,
        password: Option<String>,
    },
    /// A Modbus TCP coil.
    Coil {
        address: SocketAddr,
        unit: u8,
        coil: u16,
    },
}

/// `[[loads]]` as written: a name and one of `mqtt` or `modbus`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    name: String,
    mqtt: Option<RawMqttSwitch>,
    modbus: Option<RawCoil>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawMqttSwitch {
    broker: String,
    topic: String,
    #[serde(default = "default_on")]
    on: String,
    #[serde(default = "default_off")]
    off: String,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawCoil {
    address: SocketAddr,
    #[serde(default = "one_u8")]
    unit: u8,
    coil: u16,
}

fn default_on() -> String {
    "ON".into()
}
fn default_off() -> String {
    "OFF".into()
}

impl TryFrom<RawLoad> for LoadConfig {
    type Error = String;
    fn try_from(r: RawLoad) -> Result<LoadConfig, String> {
        let switch = match (r.mqtt, r.modbus) {
            (Some(m), None) => {
                if host_port(&m.broker).is_none() {
                    return Err(format!(
                        "load {}: `mqtt.broker` {:?} is not host:port",
                        r.name, m.broker
                    ));
                }
                if m.topic.is_empty() || m.topic.contains(['+', '#']) {
                    return Err(format!(
                        "load {}: `mqtt.topic` {:?} is not a topic to publish to",
                        r.name, m.topic
                    ));
                }
                SwitchConfig::Mqtt {
                    broker: m.broker,
                    topic: m.topic,
                    on: m.on,
                    off: m.off,
                    username: m.username,
                    password: m.password,
                }
            }
            (None, Some(c)) => SwitchConfig::Coil {
                address: c.address,
                unit: c.unit,
                coil: c.coil,
            },
            _ => {
                return Err(format!(
                    "load {}: give its switch as `mqtt` or `modbus`, one of the two",
                    r.name
                ))
            }
        };
        Ok(LoadConfig {
            name: r.name,
            switch,
        })
    }
}

impl From<LoadConfig> for RawLoad {
    fn from(l: LoadConfig) -> RawLoad {
        let (mqtt, modbus) = match l.switch {
            SwitchConfig::Mqtt {
                broker,
                topic,
                on,
                off,
                username,
                password,
            } => (
                Some(RawMqttSwitch {
                    broker,
                    topic,
                    on,
                    off,
                    username,
                    password,
                }),
                None,
            ),
            SwitchConfig::Coil {
                address,
                unit,
                coil,
            } => (
                None,
                Some(RawCoil {
                    address,
                    unit,
                    coil,
                }),
            ),
        };
        RawLoad {
            name: l.name,
            mqtt,
            modbus,
        }
    }
}

/// The heat pump of `[home.heat_pump]`: switched on and off (`mqtt` or `modbus`, as a load's
/// switch), or given a power setpoint (`setpoint`: watts published on a topic); and the room
/// sensor the home reads its indoor temperature from (`indoor`), without which it follows the
/// building's model.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(try_from = "RawHeatPump", into = "RawHeatPump")]
pub struct HeatPumpConfig {
    pub drive: HeatPumpDrive,
    pub indoor: Option<SensorConfig>,
}

/// How the heat pump is driven.
#[derive(Clone, Debug, PartialEq)]
pub enum HeatPumpDrive {
    /// On and off: on for the share of each slot the plan's energy needs.
    Switch(SwitchConfig),
    /// Its electrical power, W, published on `topic` (an SG-Ready bridge, a heat pump's own
    /// MQTT interface, Home Assistant's `number` entity).
    Setpoint {
        broker: String,
        topic: String,
        username: Option<String>,
        password: Option<String>,
    },
}

/// A number read from an MQTT topic: the payload itself, or `field` of a JSON object
/// (Zigbee2MQTT's `temperature`, a Shelly H&T's `tC`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    pub broker: String,
    pub topic: String,
    pub field: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawHeatPump {
    mqtt: Option<RawMqttSwitch>,
    modbus: Option<RawCoil>,
    setpoint: Option<RawSetpoint>,
    indoor: Option<SensorConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawSetpoint {
    broker: String,
    topic: String,
    username: Option<String>,
    password: Option<String>,
}

fn topic_to_publish(key: &str, topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(format!("`{key}` {topic:?} is not a topic to publish to"));
    }
    Ok(())
}

fn broker_address(key: &str, broker: &str) -> Result<(), String> {
    if host_port(broker).is_none() {
        return Err(format!("`{key}` {broker:?} is not host:port"));
    }
    Ok(())
}

/// A heat pump's drive of the table `table` (one of a switch or a setpoint) and its sensor
/// (`sensor_key`), checked.
fn thermal_drive(
    (table, sensor_key): (&str, &str),
    r: RawHeatPump,
) -> Result<(HeatPumpDrive, Option<SensorConfig>), String> {
    let drive = match (r.mqtt, r.modbus, r.setpoint) {
        (Some(m), None, None) => {
            let switch = LoadConfig::try_from(RawLoad {
                name: table.replace('_', " "),
                mqtt: Some(m),
                modbus: None,
            })?;
            HeatPumpDrive::Switch(switch.switch)
        }
        (None, Some(c), None) => HeatPumpDrive::Switch(SwitchConfig::Coil {
            address: c.address,
            unit: c.unit,
            coil: c.coil,
        }),
        (None, None, Some(p)) => {
            broker_address(&format!("{table}.setpoint.broker"), &p.broker)?;
            topic_to_publish(&format!("{table}.setpoint.topic"), &p.topic)?;
            HeatPumpDrive::Setpoint {
                broker: p.broker,
                topic: p.topic,
                username: p.username,
                password: p.password,
            }
        }
        _ => {
            return Err(format!(
                "{table}: give one of `mqtt` or `modbus` (a switch) or `setpoint` (its power)"
            ))
        }
    };
    if let Some(i) = &r.indoor {
        broker_address(&format!("{table}.{sensor_key}.broker"), &i.broker)?;
        if i.topic.is_empty() {
            return Err(format!("`{table}.{sensor_key}.topic` is empty"));
        }
    }
    Ok((drive, r.indoor))
}

impl TryFrom<RawHeatPump> for HeatPumpConfig {
    type Error = String;
    fn try_from(r: RawHeatPump) -> Result<HeatPumpConfig, String> {
        let (drive, indoor) = thermal_drive(("heat_pump", "indoor"), r)?;
        Ok(HeatPumpConfig { drive, indoor })
    }
}

/// The hot-water tank's heat pump of `[home.hot_water]`: switched on and off (`mqtt` or
/// `modbus`) or given a power setpoint (`setpoint`), as a heat pump; and the tank's temperature
/// sensor (`tank`), without which the home follows the tank's model.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(try_from = "RawHotWater", into = "RawHotWater")]
pub struct HotWaterConfig {
    pub drive: HeatPumpDrive,
    pub tank: Option<SensorConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawHotWater {
    mqtt: Option<RawMqttSwitch>,
    modbus: Option<RawCoil>,
    setpoint: Option<RawSetpoint>,
    tank: Option<SensorConfig>,
}

impl TryFrom<RawHotWater> for HotWaterConfig {
    type Error = String;
    fn try_from(r: RawHotWater) -> Result<HotWaterConfig, String> {
        let raw = RawHeatPump {
            mqtt: r.mqtt,
            modbus: r.modbus,
            setpoint: r.setpoint,
            indoor: r.tank,
        };
        let (drive, tank) = thermal_drive(("hot_water", "tank"), raw)?;
        Ok(HotWaterConfig { drive, tank })
    }
}

impl From<HotWaterConfig> for RawHotWater {
    fn from(h: HotWaterConfig) -> RawHotWater {
        let raw = RawHeatPump::from(HeatPumpConfig {
            drive: h.drive,
            indoor: h.tank,
        });
        RawHotWater {
            mqtt: raw.mqtt,
            modbus: raw.modbus,
            setpoint: raw.setpoint,
            tank: raw.indoor,
        }
    }
}

impl From<HeatPumpConfig> for RawHeatPump {
    fn from(h: HeatPumpConfig) -> RawHeatPump {
        let mut raw = RawHeatPump {
            mqtt: None,
            modbus: None,
            setpoint: None,
            indoor: h.indoor,
        };
        match h.drive {
            HeatPumpDrive::Switch(switch) => {
                let l = RawLoad::from(LoadConfig {
                    name: String::new(),
                    switch,
                });
                raw.mqtt = l.mqtt;
                raw.modbus = l.modbus;
            }
            HeatPumpDrive::Setpoint {
                broker,
                topic,
                username,
                password,
            } => {
                raw.setpoint = Some(RawSetpoint {
                    broker,
                    topic,
                    username,
                    password,
                })
            }
        }
        raw
    }
}

/// How the home drives its devices.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Every setpoint carries this reversion timeout (real seconds): if the home stops
    /// refreshing it, the device returns to its own default by itself.
    #[serde(default = "default_reversion_s")]
    pub reversion_s: u64,
    /// Plan again when the battery's measured energy and the plan's part by more than this, kWh.
    #[serde(default = "default_replan_kwh")]
    pub replan_soc_kwh: f64,
    /// No new orders this close to gate closure, chain seconds.
    #[serde(default = "default_gate_margin_s")]
    pub gate_margin_s: u64,
    /// Real seconds between attempts to reach the node while it is away.
    #[serde(default = "default_retry_s")]
    pub node_retry_s: u64,
    /// Most slot readings kept on disk while the node is away (the oldest go first).
    #[serde(default = "default_queue")]
    pub max_queued_readings: usize,
}

impl Default for ControlConfig {
    fn default() -> ControlConfig {
        ControlConfig {
            reversion_s: default_reversion_s(),
            replan_soc_kwh: default_replan_kwh(),
            gate_margin_s: default_gate_margin_s(),
            node_retry_s: default_retry_s(),
            max_queued_readings: default_queue(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("gridmesh-home")
}
fn one() -> u32 {
    1
}
fn one_u8() -> u8 {
    1
}
fn default_poll_ms() -> u64 {
    15_000
}
fn default_node_poll_ms() -> u64 {
    30_000
}
fn default_reversion_s() -> u64 {
    60
}
fn default_replan_kwh() -> f64 {
    0.5
}
fn default_gate_margin_s() -> u64 {
    120
}
fn default_retry_s() -> u64 {
    5
}
fn default_queue() -> usize {
    // Four weeks of slots, three readings each.
    4 * 7 * 96 * 3
}

impl HomeConfig {
    /// Reads, parses and checks `path`; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<HomeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut cfg: HomeConfig = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            error,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut cfg.key);
        resolve(&mut cfg.data_dir);
        for d in [cfg.pv.as_mut(), cfg.battery.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(k) = d.key.as_mut() {
                resolve(k);
            }
        }
        if let Some(k) = cfg.ev.as_mut().and_then(|e| e.key.as_mut()) {
            resolve(k);
        }
        cfg.check().map_err(|(key, reason)| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason,
        })?;
        Ok(cfg)
    }

    /// The checks, each naming its key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.node.starts_with("http://") || self.node.starts_with("https://")) {
            return Err(("node", format!("{:?} is not an http(s) URL", self.node)));
        }
        if self.time_scale == 0 || self.time_scale > 3_600 {
            return Err((
                "time_scale",
                format!("{} is not 1 to 3600", self.time_scale),
            ));
        }
        if !(10..=60_000).contains(&self.poll_ms) {
            return Err(("poll_ms", format!("{} is not 10 to 60000", self.poll_ms)));
        }
        if !(10..=60_000).contains(&self.node_poll_ms) {
            return Err((
                "node_poll_ms",
                format!("{} is not 10 to 60000", self.node_poll_ms),
            ));
        }
        self.home.check().map_err(|e| ("home", format!("{e:#}")))?;
        if self.home.location.is_empty() {
            return Err((
                "home.location",
                "the connection's market area is needed (e.g. \"street-1/home-4\")".into(),
            ));
        }
        if self.battery.is_some() != self.home.battery.is_some() {
            return Err((
                "battery",
                "a [battery] device needs its [home.battery] description (capacity_kwh, power_kw) and the other way round".into(),
            ));
        }
        if self.pv.is_some() && self.home.pv_kwp <= 0.0 {
            return Err(("home.pv_kwp", "a [pv] device needs its rating here".into()));
        }
        match (&self.ev, &self.home.ev) {
            (Some(_), None) | (None, Some(_)) => {
                return Err((
                    "ev",
                    "an [ev] charger needs its [home.ev] needs (power_kw, energy_kwh, departure_hour) and the other way round".into(),
                ))
            }
            (Some(c), Some(e)) => {
                if c.charge_point.is_empty()
                    || !c
                        .charge_point
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
                {
                    return Err((
                        "ev.charge_point",
                        format!(
                            "{:?} is not a charge point id (letters, digits, - _ .)",
                            c.charge_point
                        ),
                    ));
                }
                if !(c.min_kw > 0.0 && c.min_kw <= e.power_kw) {
                    return Err((
                        "ev.min_kw",
                        format!(
                            "{} is not above 0 and at most the EV's power_kw {}",
                            c.min_kw, e.power_kw
                        ),
                    ));
                }
                if !matches!(c.phases, 1 | 3) {
                    return Err(("ev.phases", format!("{} is not 1 or 3", c.phases)));
                }
                if !(100.0..=400.0).contains(&c.volts) {
                    return Err((
                        "ev.volts",
                        format!("{} is not 100 to 400 V per phase", c.volts),
                    ));
                }
                if c.remote_tag.is_empty() || c.remote_tag.len() > 20 {
                    return Err((
                        "ev.remote_tag",
                        "an OCPP id tag is 1 to 20 characters".into(),
                    ));
                }
            }
            (None, None) => {}
        }
        match &self.grid_meter {
            None => {
                return Err((
                    "grid_meter",
                    "the home needs its connection's meter: it settles every slot".into(),
                ))
            }
            Some(m) => {
                match (&m.sunspec, &m.mqtt) {
                    (Some(_), None) => {}
                    (None, Some(q)) => q.check()?,
                    _ => return Err((
                        "grid_meter",
                        "give the meter's `sunspec` address or its `mqtt` topics, one of the two"
                            .into(),
                    )),
                }
            }
        }
        for l in &self.loads {
            if !self.home.loads.iter().any(|h| h.name == l.name) {
                return Err((
                    "loads",
                    format!(
                        "load {:?} has a switch but no [[home.loads]] entry (power_kw, energy_kwh, window)",
                        l.name
                    ),
                ));
            }
        }
        for h in &self.home.loads {
            if self.loads.iter().filter(|l| l.name == h.name).count() != 1 {
                return Err((
                    "home.loads",
                    format!(
                        "load {:?} needs one [[loads]] entry with its switch (mqtt or modbus)",
                        h.name
                    ),
                ));
            }
        }
        match (&self.home.heat_pump, &self.heat_pump) {
            (Some(_), None) => {
                return Err((
                    "home.heat_pump",
                    "the heat pump needs a [heat_pump] table: its switch (mqtt or modbus) or its setpoint topic".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "heat_pump",
                    "a heat pump needs its building in [home.heat_pump] (floor_m2, insulation, max_power_kw, comfort_c)".into(),
                ))
            }
            _ => {}
        }
        match (&self.home.hot_water, &self.hot_water) {
            (Some(_), None) => {
                return Err((
                    "home.hot_water",
                    "the hot-water tank needs a [hot_water] table: its heat pump's switch (mqtt or modbus) or setpoint topic".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "hot_water",
                    "a hot-water heat pump needs its tank in [home.hot_water] (litres, kwh_per_day, band_c, max_power_kw)".into(),
                ))
            }
            _ => {}
        }
        let c = &self.control;
        if !(1..=3_600).contains(&c.reversion_s) {
            return Err((
                "control.reversion_s",
                format!("{} is not 1 to 3600 seconds", c.reversion_s),
            ));
        }
        if c.reversion_s * 1_000 < 3 * self.poll_ms {
            return Err((
                "control.reversion_s",
                format!(
                    "{} s would revert between two polls {} ms apart: make it at least three polls",
                    c.reversion_s, self.poll_ms
                ),
            ));
        }
        if c.replan_soc_kwh.is_nan() || c.replan_soc_kwh <= 0.0 {
            return Err(("control.replan_soc_kwh", "must be above 0".into()));
        }
        if c.node_retry_s == 0 {
            return Err(("control.node_retry_s", "must be at least 1".into()));
        }
        if c.max_queued_readings == 0 {
            return Err(("control.max_queued_readings", "must be at least 1".into()));
        }
        if let Some(m) = self.mqtt.as_ref().filter(|m| host_port(m).is_none()) {
            return Err(("mqtt", format!("{m:?} is not host:port")));
        }
        if let Some(h) = self
            .home_assistant
            .as_ref()
            .filter(|h| host_port(&h.mqtt).is_none())
        {
            return Err((
                "home_assistant.mqtt",
                format!("{:?} is not host:port", h.mqtt),
            ));
        }
        Ok(())
    }

    pub fn reversion(&self) -> Duration {
        Duration::from_secs(self.control.reversion_s)
    }
}

/// The commented file `gridmesh home init` writes.
pub fn template(discovered: &str) -> String {
    format!(
        r#"# gridmesh home: one process per home. Edit, then run `gridmesh home run --config THIS_FILE`.
# Paths are relative to this file.

# The community node's API.
node = "http://127.0.0.1:8080"
# The owner's account key (`gridmesh keys new --out owner.key`): it signs orders and readings.
key = "owner.key"
# Telemetry, history, the reading queue and status.json live here.
data_dir = "gridmesh-home"
# Real ms between two looks at the devices (readings, setpoints) and at the market (plans,
# orders, readings sent).
poll_ms = 15000
node_poll_ms = 30000

# What the agent plans for.
[home]
# The market area of the connection (ask your community's operator).
location = "street-1/home-1"
# Yearly consumption: the reference profile until the home has its own history.
annual_kwh = 4000
# PV rating, kWp (0 without PV).
pv_kwp = 6

[home.battery]
capacity_kwh = 10
power_kw = 5
# Kept for outages; the plan never goes below it.
reserve_kwh = 1

# An EV: what it needs by when (UTC hours). While the charger says a car is plugged in, the plan
# gets it `energy_kwh` per session by `departure_hour`; `arrival_hour` is only the cold-start guess.
# [home.ev]
# power_kw = 11
# energy_kwh = 20
# arrival_hour = 17
# departure_hour = 7
#
# Loads the plan may shift within a daily window (UTC hours), and their switches:
# [[home.loads]]
# name = "boiler"
# power_kw = 2
# energy_kwh = 3
# earliest_hour = 9
# latest_hour = 16
# [[loads]]
# name = "boiler"
# # A Tasmota/Shelly switch; set its auto-off (PulseTime, auto_off) to control.reversion_s.
# mqtt = {{ broker = "192.168.1.5:1883", topic = "cmnd/boiler/POWER" }}
# # or a Modbus coil: modbus = {{ address = "192.168.1.30:502", unit = 1, coil = 0 }}
#
# A heat pump heating the home, moved in time within the comfort band (°C):
# [home.heat_pump]
# floor_m2 = 140
# insulation = "average"     # passive, good, average or poor
# max_power_kw = 3
# comfort_c = [20, 22.5]
# [heat_pump]
# # Switched on and off (SG-Ready contact, a relay) like a load ...
# modbus = {{ address = "192.168.1.30:502", coil = 1 }}
# # ... or its power in W on a topic: setpoint = {{ broker = "192.168.1.5:1883", topic = "heatpump/set/power_w" }}
# # A room sensor (without, the home follows the building's model):
# indoor = {{ broker = "192.168.1.5:1883", topic = "zigbee2mqtt/living-room", field = "temperature" }}
#
# A hot-water tank heated by its own heat pump, moved in time within its band (°C); the day's
# draw is 40 % from 06:00 to 08:00 UTC and 50 % from 18:00 to 21:00:
# [home.hot_water]
# litres = 200
# kwh_per_day = 6
# band_c = [45, 60]
# max_power_kw = 2
# [hot_water]
# mqtt = {{ broker = "192.168.1.5:1883", topic = "cmnd/water-heater/POWER" }}
# # or setpoint = {{ ... }} as for the heat pump; a tank sensor (without, the tank's model):
# tank = {{ broker = "192.168.1.5:1883", topic = "water-heater/tele/SENSOR", field = "temperature" }}
#
# Its charger (OCPP 1.6J): point the charger at ws://THIS_HOST:8887/ocpp/wallbox-1.
# [ev]
# ocpp_listen = "0.0.0.0:8887"
# charge_point = "wallbox-1"
# key = "ev.key"
# # The EV's lowest rate, kW, used while there is no plan to follow.
# min_kw = 1.4

{discovered}
# Show the home in Home Assistant (MQTT discovery: it appears with its energy sensors, ready for
# the Energy dashboard).
# [home_assistant]
# mqtt = "192.168.1.5:1883"
# username = "gridmesh"
# password = "..."

[control]
# Every setpoint reverts on the device this many real seconds after the home's last write.
reversion_s = 60
# Plan again when the battery and the plan part by more than this, kWh.
replan_soc_kwh = 0.5
"#
    )
}

/// The device sections for `template` when nothing was discovered.
pub const UNDISCOVERED: &str = r#"# The devices (SunSpec over Modbus TCP). Each producing device signs with its own key,
# registered on the chain with `gridmesh tx register-device --device-key`.
[pv]
sunspec = "192.168.1.20:502"
unit = 1
key = "pv.key"

[battery]
sunspec = "192.168.1.20:502"
unit = 1
key = "battery.key"

# The connection's meter: a SunSpec meter (models 201-204), positive W importing.
[grid_meter]
sunspec = "192.168.1.21:502"
unit = 1
# Or a meter on MQTT (a P1/DSMR bridge, a Home Assistant sensor), instead of `sunspec`:
# [grid_meter.mqtt]
# broker = "192.168.1.5:1883"
# import_topics = ["dsmr/reading/electricity_delivered_1", "dsmr/reading/electricity_delivered_2"]
# export_topics = ["dsmr/reading/electricity_returned_1", "dsmr/reading/electricity_returned_2"]
# # A net power topic, positive importing; without one, the power comes from the registers.
# # power_topic = "home/grid_power_w"
"#;

/// Walks the SunSpec map at `addr` (unit 1) and writes the device sections it finds: an
/// inverter (models 101-103) as `[pv]`, storage (124 or 802) as `[battery]`, a meter alone
/// (201-204 without an inverter or storage) as `[grid_meter]`.
pub async fn discover(addr: SocketAddr) -> Result<String, gridmesh_gateway::sunspec::SunSpecError> {
    let mut dev = gridmesh_gateway::sunspec::SunSpecDevice::connect(addr, 1).await?;
    let id = dev.identity().await?;
    let has = |ids: &[u16]| dev.models.iter().any(|m| ids.contains(&m.id));
    let (pv, storage, meter) = (
        has(&[101, 102, 103]),
        has(&[124, 802]),
        has(&[201, 202, 203, 204]),
    );
    let models: Vec<u16> = dev.models.iter().map(|m| m.id).collect();
    let mut out = format!(
        "# Found at {addr}: {} {} (serial {}), SunSpec models {models:?}.\n",
        id.manufacturer, id.model, id.serial
    );
    if pv {
        out += &format!("[pv]\nsunspec = \"{addr}\"\nunit = 1\nkey = \"pv.key\"\n\n");
    }
    if storage {
        out += &format!("[battery]\nsunspec = \"{addr}\"\nunit = 1\nkey = \"battery.key\"\n\n");
    }
    if meter && !pv && !storage {
        out += &format!("[grid_meter]\nsunspec = \"{addr}\"\nunit = 1\n\n");
    }
    if !(pv || storage || meter) {
        out += "# (no inverter, storage or meter model: nothing to configure here)\n\n";
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_home_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/home/home.toml");
        let cfg = HomeConfig::load(&path).unwrap();
        assert_eq!(cfg.time_scale, 60);
        assert!(cfg.pv.is_some() && cfg.battery.is_some() && cfg.grid_meter.is_some());
    }

    #[test]
    fn the_template_loads_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home.toml");
        std::fs::write(&path, template(UNDISCOVERED)).unwrap();
        assert_eq!(HomeConfig::load(&path).unwrap().poll_ms, 15_000);
        let cfg = HomeConfig::load(&path).unwrap();
        assert_eq!(cfg.key, dir.path().join("owner.key"));
        assert_eq!(cfg.control.reversion_s, 60);
        for (from, to, key) in [
            ("\npoll_ms = 15000", "\npoll_ms = 0", "poll_ms"),
            ("node_poll_ms = 30000", "node_poll_ms = 9", "node_poll_ms"),
            ("reversion_s = 60", "reversion_s = 2", "control.reversion_s"),
            (
                "location = \"street-1/home-1\"",
                "location = \"\"",
                "home.location",
            ),
            (
                "node = \"http://127.0.0.1:8080\"",
                "node = \"127.0.0.1:8080\"",
                "node",
            ),
            (
                "# [home_assistant]\n# mqtt = \"192.168.1.5:1883\"",
                "[home_assistant]\nmqtt = \"192.168.1.5\"",
                "home_assistant.mqtt",
            ),
            (
                "[grid_meter]\nsunspec = \"192.168.1.21:502\"\nunit = 1\n",
                "",
                "grid_meter",
            ),
        ] {
            let text = template(UNDISCOVERED).replace(from, to);
            assert_ne!(text, template(UNDISCOVERED), "{from}");
            std::fs::write(&path, text).unwrap();
            let e = HomeConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
        std::fs::write(
            &path,
            template(UNDISCOVERED).replace("[control]", "[contrl]"),
        )
        .unwrap();
        let e = HomeConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("contrl"), "{e}");
    }

    #[test]
    fn an_ev_charger_needs_its_needs_and_sane_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home.toml");
        let ev =
            "[home.ev]\npower_kw = 11\nenergy_kwh = 20\narrival_hour = 17\ndeparture_hour = 7\n";
        let charger = "[ev]\nocpp_listen = \"127.0.0.1:8887\"\ncharge_point = \"wallbox-1\"\nkey = \"ev.key\"\n";
        let with = |needs: &str, charger: &str| {
            template(UNDISCOVERED)
                .replace("[pv]\n", &format!("{charger}\n[pv]\n"))
                .replace("[home.battery]", &format!("{needs}\n[home.battery]"))
        };
        std::fs::write(&path, with(ev, charger)).unwrap();
        let cfg = HomeConfig::load(&path).unwrap();
        let c = cfg.ev.unwrap();
        assert_eq!(c.key, Some(dir.path().join("ev.key")));
        assert_eq!((c.min_kw, c.phases, c.volts), (1.4, 3, 230.0));
        assert!(c.id_tags.is_empty());
        for (needs, charger, key) in [
            ("", charger, "ev"),
            (ev, "", "ev"),
            (
                ev,
                &charger.replace("wallbox-1", "wall box"),
                "ev.charge_point",
            ),
            (ev, &format!("{charger}min_kw = 12\n"), "ev.min_kw"),
            (ev, &format!("{charger}phases = 2\n"), "ev.phases"),
            (ev, &format!("{charger}volts = 12\n"), "ev.volts"),
        ] {
            std::fs::write(&path, with(needs, charger)).unwrap();
            let e = HomeConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
    }

    #[test]
    fn a_shiftable_load_needs_its_switch_and_the_other_way_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home.toml");
        let needs = "[[home.loads]]\nname = \"boiler\"\npower_kw = 2\nenergy_kwh = 3\nearliest_hour = 10\nlatest_hour = 16\n";
        let mqtt = "[[loads]]\nname = \"boiler\"\nmqtt = { broker = \"127.0.0.1:1883\", topic = \"cmnd/boiler/POWER\" }\n";
        let coil =
            "[[loads]]\nname = \"boiler\"\nmodbus = { address = \"127.0.0.1:502\", coil = 3 }\n";
        let with = |extra: &str| format!("{}\n{extra}", template(UNDISCOVERED));
        std::fs::write(&path, with(&format!("{needs}{mqtt}"))).unwrap();
        let cfg = HomeConfig::load(&path).unwrap();
        assert!(matches!(&cfg.loads[0].switch, SwitchConfig::Mqtt { on, .. } if on == "ON"));
        std::fs::write(&path, with(&format!("{needs}{coil}"))).unwrap();
        let cfg = HomeConfig::load(&path).unwrap();
        assert!(matches!(
            cfg.loads[0].switch,
            SwitchConfig::Coil {
                unit: 1,
                coil: 3,
                ..
            }
        ));
        for (text, why) in [
            (needs.to_string(), "`home.loads`"),
            (mqtt.to_string(), "`loads`"),
            (format!("{needs}{mqtt}{coil}"), "`home.loads`"),
            (
                format!("{needs}[[loads]]\nname = \"boiler\"\n"),
                "`mqtt` or `modbus`",
            ),
            (
                format!(
                    "{needs}{}",
                    mqtt.replace("cmnd/boiler/POWER", "cmnd/+/POWER")
                ),
                "not a topic",
            ),
        ] {
            std::fs::write(&path, with(&text)).unwrap();
            let e = HomeConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn a_heat_pump_needs_its_building_its_drive_and_one_drive_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home.toml");
        let building = "[home.heat_pump]\nfloor_m2 = 140\ninsulation = \"average\"\nmax_power_kw = 3\ncomfort_c = [20, 22.5]\n";
        let coil = "[heat_pump]\nmodbus = { address = \"127.0.0.1:502\", coil = 1 }\n";
        let setpoint = "[heat_pump]\nsetpoint = { broker = \"127.0.0.1:1883\", topic = \"hp/set/power_w\" }\nindoor = { broker = \"127.0.0.1:1883\", topic = \"z2m/living\", field = \"temperature\" }\n";
        let with = |extra: &str| format!("{}\n{extra}", template(UNDISCOVERED));
        std::fs::write(&path, with(&format!("{building}{coil}"))).unwrap();
        let cfg = HomeConfig::load(&path).unwrap();
        let hp = cfg.heat_pump.unwrap();
        assert!(matches!(
            hp.drive,
            HeatPumpDrive::Switch(SwitchConfig::Coil { coil: 1, .. })
        ));
        assert_eq!(hp.indoor, None);
        assert_eq!(cfg.home.heat_pump.unwrap().comfort_c, [20.0, 22.5]);
        std::fs::write(&path, with(&format!("{building}{setpoint}"))).unwrap();
        let hp = HomeConfig::load(&path).unwrap().heat_pump.unwrap();
        assert!(
            matches!(&hp.drive, HeatPumpDrive::Setpoint { topic, .. } if topic == "hp/set/power_w")
        );
        assert_eq!(hp.indoor.unwrap().field.as_deref(), Some("temperature"));
        for (text, why) in [
            (building.to_string(), "`home.heat_pump`"),
            (coil.to_string(), "`heat_pump`"),
            (
                format!("{building}[heat_pump]\nindoor = {{ broker = \"127.0.0.1:1883\", topic = \"t\" }}\n"),
                "one of `mqtt` or `modbus`",
            ),
            (
                format!("{building}{}", setpoint.replace("hp/set/power_w", "hp/#")),
                "heat_pump.setpoint.topic",
            ),
            (
                format!("{}{coil}", building.replace("[20, 22.5]", "[23, 21]")),
                "comfort_c",
            ),
            (
                format!("{}{coil}", building.replace("\"average\"", "\"leaky\"")),
                "insulation",
            ),
        ] {
            std::fs::write(&path, with(&text)).unwrap();
            let e = HomeConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn a_hot_water_tank_needs_its_tank_its_drive_and_sane_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home.toml");
        let tank = "[home.hot_water]\nlitres = 200\nkwh_per_day = 6\nband_c = [45, 60]\nmax_power_kw = 2\n";
        let switch = "[hot_water]\nmqtt = { broker = \"127.0.0.1:1883\", topic = \"cmnd/water-heater/POWER\" }\ntank = { broker = \"127.0.0.1:1883\", topic = \"water-heater/tank\", field = \"temperature\" }\n";
        let with = |extra: &str| format!("{}\n{extra}", template(UNDISCOVERED));
        std::fs::write(&path, with(&format!("{tank}{switch}"))).unwrap();
        let cfg = HomeConfig::load(&path).unwrap();
        let hw = cfg.hot_water.unwrap();
        assert!(matches!(
            &hw.drive,
            HeatPumpDrive::Switch(SwitchConfig::Mqtt { topic, .. }) if topic == "cmnd/water-heater/POWER"
        ));
        assert_eq!(hw.tank.unwrap().topic, "water-heater/tank");
        assert_eq!(cfg.home.hot_water.unwrap().band_c, [45.0, 60.0]);
        for (text, why) in [
            (tank.to_string(), "`home.hot_water`"),
            (switch.to_string(), "`hot_water`"),
            (
                format!("{tank}[hot_water]\ntank = {{ broker = \"127.0.0.1:1883\", topic = \"t\" }}\n"),
                "hot_water: give one of `mqtt` or `modbus`",
            ),
            (
                format!("{tank}[hot_water]\nsetpoint = {{ broker = \"127.0.0.1:1883\", topic = \"wh/#\" }}\n"),
                "hot_water.setpoint.topic",
            ),
            (
                format!("{tank}[hot_water]\nmodbus = {{ address = \"127.0.0.1:502\", coil = 2 }}\ntank = {{ broker = \"nowhere\", topic = \"t\" }}\n"),
                "hot_water.tank.broker",
            ),
            (
                format!("{}{switch}", tank.replace("[45, 60]", "[60, 45]")),
                "hot_water.band_c",
            ),
            (
                format!("{}{switch}", tank.replace("litres = 200", "litres = 0")),
                "hot_water.litres",
            ),
            (
                format!("{}{switch}", tank.replace("kwh_per_day = 6", "kwh_per_day = 500")),
                "hot_water.kwh_per_day",
            ),
            (
                format!("{}{switch}", tank.replace("max_power_kw = 2", "max_power_kw = -1")),
                "hot_water.max_power_kw",
            ),
        ] {
            std::fs::write(&path, with(&text)).unwrap();
            let e = HomeConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
