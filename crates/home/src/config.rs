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
    /// Real time between two looks at the market, ms: plans, orders, readings sent.
    #[serde(default = "default_node_poll_ms")]
    pub node_poll_ms: u64,
    /// The household the agent plans for: location (the market area of the connection),
    /// yearly consumption (the cold-start profile), PV, battery, EV.
    pub home: HomeSpec,
    pub pv: Option<SunSpecConfig>,
    pub battery: Option<SunSpecConfig>,
    pub grid_meter: Option<GridMeterConfig>,
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

impl HomeAssistantConfig {
    /// The broker's host and port.
    pub fn broker(&self) -> (String, u16) {
        let (h, p) = self.mqtt.rsplit_once(':').expect("checked: host:port");
        (h.to_string(), p.parse().expect("checked: a port"))
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

/// The connection's meter.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GridMeterConfig {
    /// A SunSpec meter (models 201-204): positive W is import.
    pub sunspec: SocketAddr,
    #[serde(default = "one_u8")]
    pub unit: u8,
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
    15_000
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
        if self.home.ev.is_some() {
            return Err((
                "home.ev",
                "the home process does not drive an EV charger yet: plan the EV with `gridmesh agent`, or leave it out".into(),
            ));
        }
        if self.grid_meter.is_none() {
            return Err((
                "grid_meter",
                "the home needs its connection's meter: it settles every slot".into(),
            ));
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
        if let Some(m) = &self.mqtt {
            if m.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(("mqtt", format!("{m:?} is not host:port")));
            }
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
node_poll_ms = 15000

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

# An EV's daily needs (UTC hours):
# [home.ev]
# power_kw = 11
# energy_kwh = 20
# arrival_hour = 17
# departure_hour = 7

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
            ("node_poll_ms = 15000", "node_poll_ms = 9", "node_poll_ms"),
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
}
