//! `gridmesh device`: device adapters (OCPP, SunSpec) into signed telemetry.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::cli::broker_arg;
use crate::cmd::runtime;
use crate::output::print_json;

#[derive(Subcommand)]
pub(crate) enum DeviceCommand {
    /// An OCPP central system for EV chargers (`ws://LISTEN/ocpp/{id}`), 2.0.1 or 1.6J as each
    /// charger offers: answers boot, status, authorization, transactions and meter values, signs
    /// every energy register with the charger's device key and publishes it on MQTT; reads each
    /// charger's smart-charging configuration (1.6J keys, 2.0.1 device model), then sends the
    /// site limit (ChargePointMaxProfile / ChargingStationMaxProfile) and the charging plan
    /// (TxDefaultProfile) fitted to it, and clears the plan when a transaction stops.
    Ocpp {
        /// Where chargers connect (WebSocket), HOST:PORT; they use ws://HOST:PORT/ocpp/CHARGER_ID.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// A charger: its charge point id and device key file, `ID=KEYFILE` (repeat).
        #[arg(long = "charger", value_name = "ID=KEYFILE", required = true)]
        chargers: Vec<String>,
        /// Accepted RFID tags (repeat).
        #[arg(long = "id-tag")]
        id_tags: Vec<String>,
        /// The chain the samples are signed for.
        #[arg(long, default_value = gridmesh_ledger::genesis::DEV_CHAIN_ID)]
        chain_id: String,
        /// The broker for the signed samples, HOST:PORT.
        #[arg(long)]
        mqtt: String,
        /// The site's limit for each charger, kW.
        #[arg(long)]
        site_limit_kw: Option<f64>,
        /// The charging plan: `SECONDS:KW` steps from the plan's start, e.g. `0:7.4,900:3.7`.
        #[arg(long, value_delimiter = ',')]
        plan: Vec<String>,
        /// Volts per phase and phases, to turn watts into amperes for chargers that take current.
        #[arg(long, default_value_t = 230.0)]
        volts: f64,
        /// Phases the chargers draw on (with --volts).
        #[arg(long, default_value_t = 3)]
        phases: u8,
        /// Stop after this many transactions have stopped.
        #[arg(long)]
        sessions: Option<u64>,
        /// Print the event log as JSON at the end.
        #[arg(long)]
        json: bool,
    },
    /// Poll a SunSpec inverter or battery over Modbus TCP (models discovered by walking its map),
    /// sign every measurement with the device key and publish it, and each slot's reading, on
    /// MQTT for a node's gateway. Controls given here (--limit-pct, --charge-pct,
    /// --discharge-pct) are rewritten every poll with a reversion timeout, so the device falls
    /// back by itself when this adapter stops. With --once: discover, apply the controls,
    /// measure once and print, without MQTT.
    Sunspec {
        /// The device, HOST:PORT.
        #[arg(long)]
        modbus: std::net::SocketAddr,
        /// Modbus unit id.
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// The device's key (registered on the ledger with `tx register-device --device-key`).
        #[arg(long)]
        device_key: PathBuf,
        /// The chain the samples are signed for.
        #[arg(long, default_value = gridmesh_ledger::genesis::DEV_CHAIN_ID)]
        chain_id: String,
        /// The broker, HOST:PORT.
        #[arg(long, required_unless_present = "once")]
        mqtt: Option<String>,
        /// Milliseconds between polls.
        #[arg(long, default_value_t = 1_000)]
        interval_ms: u64,
        /// Hold the output at this percent of rating.
        #[arg(long)]
        limit_pct: Option<f64>,
        /// Hold charging at this percent of the battery's maximum rate.
        #[arg(long)]
        charge_pct: Option<f64>,
        /// Hold discharging at this percent of the battery's maximum rate.
        #[arg(long)]
        discharge_pct: Option<f64>,
        /// Seconds the device keeps a control after our last write.
        #[arg(long, default_value_t = 30)]
        revert_s: u64,
        /// Stop after this many polls.
        #[arg(long)]
        polls: Option<u64>,
        /// Discover, apply the controls, measure once and print, without MQTT.
        #[arg(long)]
        once: bool,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Ocpp {
            listen,
            chargers,
            id_tags,
            chain_id,
            mqtt,
            site_limit_kw,
            plan,
            volts,
            phases,
            sessions,
            json,
        } => {
            use gridmesh_gateway::ocpp;
            let mut keys = std::collections::HashMap::new();
            for c in &chargers {
                let (id, file) = c
                    .split_once('=')
                    .with_context(|| format!("--charger {c:?}: expected ID=KEYFILE"))?;
                let key = crate::keyfile::load(std::path::Path::new(file))
                    .with_context(|| format!("loading the key of charger {id}"))?;
                keys.insert(id.to_string(), key);
            }
            let plan = plan
                .iter()
                .map(|step| {
                    let (s, kw) = step
                        .split_once(':')
                        .with_context(|| format!("--plan step {step:?}: expected SECONDS:KW"))?;
                    let limit_w = kw
                        .parse::<f64>()
                        .ok()
                        .filter(|w| w.is_finite() && *w >= 0.0)
                        .with_context(|| format!("--plan step {step:?}: {kw:?} is not kW"))?
                        * 1000.0;
                    Ok(ocpp::PlanStep {
                        start_s: s
                            .parse()
                            .with_context(|| format!("--plan step {step:?}: bad seconds"))?,
                        limit_w,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if plan.windows(2).any(|w| w[1].start_s <= w[0].start_s) {
                bail!("--plan steps must be in increasing order of seconds");
            }
            let (host, port) = broker_arg(&mqtt)?;
            let cfg = ocpp::OcppConfig {
                chargers: keys,
                id_tags,
                chain_id: chain_id.clone(),
                site_limit_w: site_limit_kw.map(|kw| kw * 1000.0),
                plan,
                volts,
                phases,
            };
            runtime()?.block_on(async move {
                let publisher = std::sync::Arc::new(gridmesh_gateway::mqtt::Publisher::connect(
                    &host,
                    port,
                    &format!("gridmesh-ocpp-{}", std::process::id()),
                    &chain_id,
                ));
                let cs = ocpp::CentralSystem::new(cfg, publisher.clone());
                ocpp::serve(cs.clone(), listen, sessions, |addr| {
                    eprintln!("gridmesh OCPP central system on ws://{addr}/ocpp/{{id}}")
                })
                .await
                .with_context(|| format!("serving OCPP on {listen}"))?;
                let events = cs.events.lock().expect("events lock").clone();
                drop(cs);
                match std::sync::Arc::try_unwrap(publisher) {
                    Ok(p) => p.close().await,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(400)).await,
                }
                if json {
                    print_json(&events)
                } else {
                    for e in events {
                        eprintln!("{e}");
                    }
                    Ok(())
                }
            })
        }
        DeviceCommand::Sunspec {
            modbus,
            unit,
            device_key,
            chain_id,
            mqtt,
            interval_ms,
            limit_pct,
            charge_pct,
            discharge_pct,
            revert_s,
            polls,
            once,
            json,
        } => {
            use gridmesh_gateway::{adapter, sunspec};
            let key = crate::keyfile::load(&device_key)
                .with_context(|| format!("loading the device key {}", device_key.display()))?;
            let controls = adapter::Controls {
                power_limit_pct: limit_pct,
                charge_pct,
                discharge_pct,
                revert: std::time::Duration::from_secs(revert_s),
            };
            runtime()?.block_on(async move {
                if once {
                    let mut dev = sunspec::SunSpecDevice::connect(modbus, unit).await?;
                    let identity = dev.identity().await?;
                    adapter::apply_controls(&mut dev, &controls).await?;
                    let m = dev.measure().await?;
                    let out = serde_json::json!({
                        "base": dev.base,
                        "models": dev.models,
                        "identity": identity,
                        "measurement": m,
                    });
                    if json {
                        return print_json(&out);
                    }
                    eprintln!(
                        "{} {} (serial {}), SunSpec map at {} with models {:?}",
                        identity.manufacturer,
                        identity.model,
                        identity.serial,
                        dev.base,
                        dev.models.iter().map(|m| m.id).collect::<Vec<_>>()
                    );
                    eprintln!("{m:?}");
                    return Ok(());
                }
                let broker = mqtt.expect("clap requires --mqtt without --once");
                let (host, port) = broker_arg(&broker)?;
                let stats = adapter::run(adapter::AdapterConfig {
                    modbus,
                    unit,
                    chain_id,
                    key,
                    mqtt: (host, port),
                    interval: std::time::Duration::from_millis(interval_ms.max(100)),
                    controls,
                    polls,
                })
                .await;
                if json {
                    print_json(&stats)
                } else {
                    eprintln!("{stats:?}");
                    Ok(())
                }
            })
        }
    }
}
