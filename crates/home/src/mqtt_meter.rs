//! The connection's meter read from MQTT: a P1/DSMR bridge (DSMR-reader, dsmr2mqtt, a Tasmota
//! or ESPHome P1 reader) or a Home Assistant sensor republished by HA's MQTT statestream. Each
//! value comes on a topic of its own, as a plain number or as a JSON object with the value in a
//! field; the import register may be split over several topics (DSMR's two tariffs) that add up.
//! Registers are parsed exactly (decimal to mWh); a value older than `stale_s` counts as
//! missing, so a bridge that died reads as a meter that does not answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridmesh_gateway::sunspec::Measurement;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::MqttMeterConfig;
use crate::devices::DeviceStatus;

/// Largest payload taken from a meter topic.
const MAX_PAYLOAD_BYTES: usize = 4_096;

/// The last value on each topic and when it came.
type Latest = Arc<Mutex<HashMap<String, (String, Instant)>>>;

pub struct MqttMeter {
    cfg: MqttMeterConfig,
    latest: Latest,
    /// Why the broker is not connected (`None`: it is).
    broker_error: Arc<Mutex<Option<String>>>,
    last: Option<Measurement>,
    last_error: Option<String>,
    /// Without a power topic: the registers (import, export, mWh) at a chain time (ms), and the
    /// power derived from their change since (W, positive importing).
    since: Option<(u64, u64, u64)>,
    derived_w: Option<i32>,
}

/// Chain time over which the power is derived from the registers, at least.
const DERIVE_OVER_MS: u64 = 10_000;

/// The number in a payload: the payload itself, or `field` of a JSON object.
pub fn payload_value(payload: &str, field: Option<&str>) -> Option<String> {
    let text = payload.trim();
    match field {
        None => Some(text.to_string()),
        Some(f) => {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            match &v[f] {
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::String(s) => Some(s.trim().to_string()),
                _ => None,
            }
        }
    }
}

/// A register in `unit` (`kWh` or `Wh`) as mWh, exactly; `None` for anything else.
pub fn register_mwh(value: &str, unit: &str) -> Option<u64> {
    let scale = match unit {
        "kWh" => 6,
        "Wh" => 3,
        _ => return None,
    };
    gridmesh_types::parse_fixed(value, scale)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
}

impl MqttMeter {
    /// Subscribes to the meter's topics (connecting again after failures). Needs a Tokio
    /// runtime.
    pub fn start(cfg: &MqttMeterConfig, client_id: &str) -> MqttMeter {
        let (host, port) = cfg.broker();
        let mut opts = MqttOptions::new(client_id, host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(MAX_PAYLOAD_BYTES + 1_024, MAX_PAYLOAD_BYTES + 1_024);
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            opts.set_credentials(u, p);
        }
        let (client, mut events) = AsyncClient::new(opts, 64);
        let latest: Latest = Default::default();
        let broker_error = Arc::new(Mutex::new(Some("connecting".to_string())));
        let topics = cfg.topics();
        let (into, status) = (latest.clone(), broker_error.clone());
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        *status.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        for t in &topics {
                            let _ = client.subscribe(t.as_str(), QoS::AtMostOnce).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.payload.len() <= MAX_PAYLOAD_BYTES {
                            let text = String::from_utf8_lossy(&p.payload).into_owned();
                            into.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(p.topic.clone(), (text, Instant::now()));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        *status.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(format!("the meter's broker: {e}"));
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        });
        MqttMeter {
            cfg: cfg.clone(),
            latest,
            broker_error,
            last: None,
            last_error: None,
            since: None,
            derived_w: None,
        }
    }

    /// The meter at chain time `now_ms` from the last values on its topics: import and export
    /// registers (mWh) and the power (W, positive importing, as a SunSpec meter counts it), from
    /// its topic or else from the registers' change over the last ten chain seconds or more.
    pub fn measure(&mut self, now_ms: u64) -> Result<Measurement, String> {
        let mut r = self.read();
        match &mut r {
            Ok(m) => {
                if self.cfg.power_topic.is_none() {
                    let (imp, exp) = (
                        m.in_register_mwh.unwrap_or(0),
                        m.out_register_mwh.unwrap_or(0),
                    );
                    match self.since {
                        Some((i0, e0, t0)) if now_ms >= t0 + DERIVE_OVER_MS => {
                            let net_mwh = imp as f64 - i0 as f64 - (exp as f64 - e0 as f64);
                            self.derived_w =
                                Some((net_mwh * 3_600.0 / (now_ms - t0) as f64).round() as i32);
                            self.since = Some((imp, exp, now_ms));
                        }
                        Some(_) => {}
                        None => self.since = Some((imp, exp, now_ms)),
                    }
                    m.power_w = self.derived_w;
                }
                self.last = Some(m.clone());
                self.last_error = None;
            }
            Err(e) => self.last_error = Some(e.clone()),
        }
        r
    }

    fn read(&self) -> Result<Measurement, String> {
        if let Some(e) = self
            .broker_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(e);
        }
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let stale = Duration::from_secs(self.cfg.stale_s);
        let value = |topic: &str| -> Result<String, String> {
            let (payload, at) = latest
                .get(topic)
                .ok_or_else(|| format!("nothing on {topic} yet"))?;
            if at.elapsed() > stale {
                return Err(format!(
                    "{topic}: the last value is {:.0} s old",
                    at.elapsed().as_secs_f64()
                ));
            }
            payload_value(payload, self.cfg.field.as_deref()).ok_or_else(|| {
                format!(
                    "{topic}: no `{}` in {payload:?}",
                    self.cfg.field.as_deref().unwrap_or("")
                )
            })
        };
        let sum = |topics: &[String]| -> Result<u64, String> {
            let mut total = 0u64;
            for t in topics {
                let v = value(t)?;
                let mwh = register_mwh(&v, &self.cfg.energy_unit).ok_or_else(|| {
                    format!(
                        "{t}: {v:?} is not an energy register in {}",
                        self.cfg.energy_unit
                    )
                })?;
                total = total.saturating_add(mwh);
            }
            Ok(total)
        };
        let import = sum(&self.cfg.import_topics)?;
        let export = sum(&self.cfg.export_topics)?;
        let power_w = match &self.cfg.power_topic {
            None => None,
            Some(t) => {
                let v = value(t)?;
                let p: f64 = v
                    .parse()
                    .ok()
                    .filter(|p: &f64| p.is_finite() && p.abs() < 1e9)
                    .ok_or_else(|| format!("{t}: {v:?} is not a power"))?;
                let w = if self.cfg.power_unit == "kW" {
                    p * 1e3
                } else {
                    p
                };
                // Positive importing, as a SunSpec meter counts it.
                Some(w.round() as i32)
            }
        };
        Ok(Measurement {
            power_w,
            out_register_mwh: Some(export),
            in_register_mwh: Some(import),
            soc_pct: None,
            power_limit_pct: None,
            storage_control: None,
            charge_max_w: None,
        })
    }

    pub fn status(&self) -> DeviceStatus {
        let m = self.last.as_ref();
        DeviceStatus {
            connected: self.last_error.is_none() && m.is_some(),
            error: self.last_error.clone(),
            power_kw: m.and_then(|m| m.power_w).map(|w| f64::from(w) / 1_000.0),
            soc_pct: None,
            out_register_kwh: m.and_then(|m| m.out_register_mwh).map(|v| v as f64 / 1e6),
            in_register_kwh: m.and_then(|m| m.in_register_mwh).map(|v| v as f64 / 1e6),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_plain_or_in_a_json_field_and_registers_parse_exactly() {
        assert_eq!(
            payload_value(" 1234.567\n", None).as_deref(),
            Some("1234.567")
        );
        assert_eq!(
            payload_value(r#"{"value": 0.25, "unit": "kW"}"#, Some("value")).as_deref(),
            Some("0.25")
        );
        assert_eq!(
            payload_value(r#"{"state": "17.003"}"#, Some("state")).as_deref(),
            Some("17.003")
        );
        assert_eq!(payload_value("17", Some("state")), None);
        assert_eq!(payload_value(r#"{"state": null}"#, Some("state")), None);
        assert_eq!(register_mwh("1234.567", "kWh"), Some(1_234_567_000));
        assert_eq!(register_mwh("1234.5", "Wh"), Some(1_234_500));
        assert_eq!(register_mwh("-1", "kWh"), None);
        assert_eq!(register_mwh("unavailable", "kWh"), None);
        assert_eq!(register_mwh("1", "MWh"), None);
    }
}
