//! Home Assistant through MQTT discovery: the home appears as one device whose sensors HA's Energy
//! dashboard takes as they are (grid import and export, PV production, battery energy in and out:
//! `device_class: energy`, `state_class: total_increasing`, kWh), with the battery's state of
//! charge and power, the local price now, the plan ahead, and today's bill, savings and tokens
//! earned. No YAML: the config topics are retained under the discovery prefix and published
//! again whenever HA announces itself online on `<prefix>/status`.
//!
//! One state topic (`gridmesh/<id>/state`, JSON) carries every value; each sensor picks its own
//! with a value template. The availability topic turns `offline` when the home process goes
//! (MQTT last will).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

/// One sensor: object id, name, unit, device class, state class, icon.
struct Sensor {
    id: &'static str,
    name: &'static str,
    unit: Option<&'static str>,
    device_class: Option<&'static str>,
    state_class: Option<&'static str>,
}

const fn sensor(
    id: &'static str,
    name: &'static str,
    unit: Option<&'static str>,
    device_class: Option<&'static str>,
    state_class: Option<&'static str>,
) -> Sensor {
    Sensor {
        id,
        name,
        unit,
        device_class,
        state_class,
    }
}

const ENERGY: (Option<&str>, Option<&str>, Option<&str>) =
    (Some("kWh"), Some("energy"), Some("total_increasing"));

/// The sensors, in the order HA lists them.
const SENSORS: [Sensor; 15] = [
    sensor("grid_import", "Grid import", ENERGY.0, ENERGY.1, ENERGY.2),
    sensor("grid_export", "Grid export", ENERGY.0, ENERGY.1, ENERGY.2),
    sensor("pv_energy", "PV production", ENERGY.0, ENERGY.1, ENERGY.2),
    sensor(
        "battery_charged",
        "Battery charged",
        ENERGY.0,
        ENERGY.1,
        ENERGY.2,
    ),
    sensor(
        "battery_discharged",
        "Battery discharged",
        ENERGY.0,
        ENERGY.1,
        ENERGY.2,
    ),
    sensor(
        "battery_soc",
        "Battery state of charge",
        Some("%"),
        Some("battery"),
        Some("measurement"),
    ),
    sensor(
        "battery_power",
        "Battery power (+ discharging)",
        Some("kW"),
        Some("power"),
        Some("measurement"),
    ),
    sensor("ev_energy", "EV charged", ENERGY.0, ENERGY.1, ENERGY.2),
    sensor(
        "ev_power",
        "EV charging power",
        Some("kW"),
        Some("power"),
        Some("measurement"),
    ),
    sensor(
        "grid_power",
        "Grid power (+ importing)",
        Some("kW"),
        Some("power"),
        Some("measurement"),
    ),
    sensor(
        "price_now",
        "Local price now",
        Some("tokens/kWh"),
        None,
        Some("measurement"),
    ),
    sensor(
        "plan",
        "Battery plan for the next slot",
        Some("kW"),
        Some("power"),
        None,
    ),
    sensor(
        "bill_today",
        "Bill today",
        Some("tokens"),
        None,
        Some("total"),
    ),
    sensor(
        "savings_today",
        "Savings today",
        Some("tokens"),
        None,
        Some("total"),
    ),
    sensor(
        "tokens_earned_today",
        "Tokens earned today",
        Some("tokens"),
        None,
        Some("total"),
    ),
];

/// The retained discovery messages: (topic, payload) for every sensor of home `id`.
pub fn discovery(prefix: &str, id: &str, location: &str) -> Vec<(String, Value)> {
    let device = json!({
        "identifiers": [format!("gridmesh_{id}")],
        "name": format!("gridmesh home {location}"),
        "manufacturer": "gridmesh",
        "model": "home agent",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    SENSORS
        .iter()
        .map(|s| {
            let mut c = json!({
                "name": s.name,
                "unique_id": format!("gridmesh_{id}_{}", s.id),
                "object_id": format!("gridmesh_{}", s.id),
                "state_topic": state_topic(id),
                "value_template": format!("{{{{ value_json.{} }}}}", s.id),
                "availability_topic": availability_topic(id),
                "device": device,
            });
            let m = c.as_object_mut().expect("an object");
            if let Some(u) = s.unit {
                m.insert("unit_of_measurement".into(), u.into());
            }
            if let Some(d) = s.device_class {
                m.insert("device_class".into(), d.into());
            }
            if let Some(sc) = s.state_class {
                m.insert("state_class".into(), sc.into());
            }
            if s.id == "plan" {
                m.insert("json_attributes_topic".into(), state_topic(id).into());
                m.insert(
                    "json_attributes_template".into(),
                    "{{ {'slots': value_json.plan_slots} | tojson }}".into(),
                );
            }
            (format!("{prefix}/sensor/gridmesh_{id}/{}/config", s.id), c)
        })
        .collect()
}

pub fn state_topic(id: &str) -> String {
    format!("gridmesh/{id}/state")
}

pub fn availability_topic(id: &str) -> String {
    format!("gridmesh/{id}/availability")
}

/// A connection to HA's broker, announcing the home and publishing its state.
pub struct HomeAssistant {
    client: AsyncClient,
    id: String,
}

impl HomeAssistant {
    /// Connects (in the background, again after failures) and publishes discovery on every
    /// connection and whenever `<prefix>/status` says `online`. Needs a Tokio runtime.
    pub fn start(
        host: &str,
        port: u16,
        credentials: Option<(String, String)>,
        prefix: &str,
        id: &str,
        location: &str,
    ) -> HomeAssistant {
        let mut opts = MqttOptions::new(format!("gridmesh-home-{id}"), host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_last_will(LastWill::new(
            availability_topic(id),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some((user, pass)) = credentials {
            opts.set_credentials(user, pass);
        }
        let (client, mut events) = AsyncClient::new(opts, 256);
        let (pub_client, prefix, id_owned, location) = (
            client.clone(),
            prefix.to_string(),
            id.to_string(),
            location.to_string(),
        );
        tokio::spawn(async move {
            let status = format!("{prefix}/status");
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = pub_client.subscribe(&status, QoS::AtLeastOnce).await;
                        announce(&pub_client, &prefix, &id_owned, &location).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p)))
                        if p.topic == status && p.payload.as_ref() == b"online" =>
                    {
                        announce(&pub_client, &prefix, &id_owned, &location).await;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "Home Assistant's broker: connecting again in 2 s");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        });
        HomeAssistant {
            client,
            id: id.to_string(),
        }
    }

    /// Queues the state (dropped if the queue is full: the next one follows soon).
    pub fn publish_state(&self, state: &Value) {
        let _ = self.client.try_publish(
            state_topic(&self.id),
            QoS::AtMostOnce,
            false,
            state.to_string(),
        );
    }
}

async fn announce(client: &AsyncClient, prefix: &str, id: &str, location: &str) {
    for (topic, payload) in discovery(prefix, id, location) {
        let _ = client
            .publish(topic, QoS::AtLeastOnce, true, payload.to_string())
            .await;
    }
    let _ = client
        .publish(availability_topic(id), QoS::AtLeastOnce, true, "online")
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_energy_sensors_are_what_the_energy_dashboard_accepts() {
        let d = discovery("homeassistant", "abc123", "street-1/home-1");
        assert_eq!(d.len(), SENSORS.len());
        let find = |id: &str| {
            d.iter()
                .find(|(t, _)| t == &format!("homeassistant/sensor/gridmesh_abc123/{id}/config"))
                .map(|(_, c)| c.clone())
                .unwrap_or_else(|| panic!("{id}"))
        };
        for id in [
            "grid_import",
            "grid_export",
            "pv_energy",
            "battery_charged",
            "battery_discharged",
            "ev_energy",
        ] {
            let c = find(id);
            assert_eq!(c["device_class"], "energy", "{c}");
            assert_eq!(c["state_class"], "total_increasing", "{c}");
            assert_eq!(c["unit_of_measurement"], "kWh", "{c}");
            assert_eq!(c["value_template"], format!("{{{{ value_json.{id} }}}}"));
        }
        let soc = find("battery_soc");
        assert_eq!(
            (
                soc["device_class"].as_str(),
                soc["unit_of_measurement"].as_str()
            ),
            (Some("battery"), Some("%"))
        );
        // One device, named by identifiers, on every sensor; unique ids differ.
        let ids: std::collections::HashSet<String> = d
            .iter()
            .map(|(_, c)| c["unique_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), d.len());
        assert!(d
            .iter()
            .all(|(_, c)| c["device"]["identifiers"][0] == "gridmesh_abc123"));
    }
}
