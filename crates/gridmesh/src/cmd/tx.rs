//! `gridmesh tx`: sign and submit transactions.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use gridmesh_client::client::Client;
use gridmesh_ledger::TxKind;
use gridmesh_types::{Address, Amount, Hash32};

use crate::cli::{kwh_arg, NodeUrl};
use crate::output::outln;
use crate::output::print_json;

#[derive(Subcommand)]
pub(crate) enum TxCommand {
    /// Register a device (PV, battery, EV charger, load, meter) of the key's account. With
    /// --device-key, the device gets its own identity: the device key signs its registration, a
    /// bond is locked, and it carries its location (for solar geometry and the market area).
    RegisterDevice {
        /// pv, battery, ev-charger, load or meter.
        #[arg(long)]
        kind: gridmesh_ledger::DeviceKind,
        /// Rated power in kW, e.g. 5.5.
        #[arg(long)]
        capacity_kw: String,
        /// The device's own key file (its identity on the ledger).
        #[arg(long, requires_all = ["latitude", "longitude"])]
        device_key: Option<PathBuf>,
        /// Market area of the device's connection, e.g. street-1/house-4.
        #[arg(long, default_value = "")]
        location: String,
        /// Coarse position, degrees (north and east positive).
        #[arg(long, allow_hyphen_values = true)]
        latitude: Option<f64>,
        /// Longitude, degrees (east positive); with --latitude.
        #[arg(long, allow_hyphen_values = true)]
        longitude: Option<f64>,
        /// PV array tilt and azimuth (eastward from north), degrees.
        #[arg(long, default_value_t = 0)]
        tilt: u8,
        /// PV array azimuth, degrees eastward from north (180: facing south).
        #[arg(long, default_value_t = 180)]
        azimuth: u16,
        /// Tokens bonded (at least the market's min_device_bond, 10, and for a PV, battery or EV
        /// charger its device_bond_per_kw, 1, per kW of rating).
        #[arg(long, default_value = "10")]
        bond: Amount,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Place a market order for a 15-minute delivery slot.
    Order {
        /// Slot index (unix ms / 900000), or `next` for the first slot still open.
        #[arg(long, default_value = "next")]
        slot: String,
        /// bid (buy) or ask (sell).
        #[arg(long)]
        side: gridmesh_ledger::Side,
        /// Energy to buy or sell in the slot, kWh, e.g. 2.5.
        #[arg(long)]
        energy_kwh: String,
        /// Limit price in tokens per kWh.
        #[arg(long)]
        price: String,
        /// Market area of the connection, e.g. street-1/house-4.
        #[arg(long, default_value = "")]
        location: String,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Cancel an open order before gate closure (its escrow returns).
    Cancel {
        /// The order's delivery slot.
        #[arg(long)]
        slot: u64,
        /// The order's id (in its receipt and in `query slot`).
        #[arg(long)]
        order_id: u64,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Submit the connection meter's import and export for an ended slot.
    Reading {
        /// The ended slot the reading is for.
        #[arg(long)]
        slot: u64,
        /// What the connection took from the grid in the slot, kWh.
        #[arg(long, default_value = "0")]
        import_kwh: String,
        /// What it gave to the grid in the slot, kWh.
        #[arg(long, default_value = "0")]
        export_kwh: String,
        #[command(flatten)]
        common: TxCommon,
    },
    /// A device with its own key reports what it delivered (out) and took (in) in an ended slot,
    /// before the slot settles: a seller is paid for no more than its keyed devices measured.
    /// The reading continues the device's register on the ledger (the owner's to read: send it
    /// with the owner's --key) and commits to one sample the device key signs at the slot's end (a
    /// software device; real ones commit their telemetry through a gateway, see `node --mqtt`).
    DeviceReading {
        /// The device's key file.
        #[arg(long)]
        device_key: PathBuf,
        /// The ended slot the reading is for.
        #[arg(long)]
        slot: u64,
        /// What the device delivered in the slot (out), kWh.
        #[arg(long, default_value = "0")]
        out_kwh: String,
        /// What the device took in the slot (in), kWh.
        #[arg(long = "in-kwh", default_value = "0")]
        in_kwh: String,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Grid operator: a connection point's operating envelope for a slot (what its orders may
    /// import and export there).
    Envelope {
        /// The delivery slot, before its gate closure.
        #[arg(long)]
        slot: u64,
        /// The connection's location, as its orders name it.
        #[arg(long)]
        location: String,
        /// What the connection may import in the slot, kWh.
        #[arg(long)]
        import_kwh: String,
        /// What it may export in the slot, kWh.
        #[arg(long)]
        export_kwh: String,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Grid operator: record a transition of the islanding controller (islanded,
    /// resynchronising, reconnected); slots whose gate closes while islanded clear under island
    /// rules.
    GridEvent {
        /// islanded, resynchronising or reconnected.
        #[arg(long)]
        event: gridmesh_ledger::GridEventKind,
        /// When it happened (Unix ms); default: the latest block's time.
        #[arg(long)]
        at_ms: Option<u64>,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Report a device's reading of a slot as false: with --proof-hex, one sample of the
    /// telemetry it committed to (from `GET /v1/telemetry/{device}/{slot}/proof/{index}` of a
    /// node that holds it) that contradicts it, slashing the bond at once; with --physics, a
    /// reading held by a hard physics check, opening a dispute that slashes when the window ends.
    ReportFraud {
        /// The device whose reading is false.
        #[arg(long)]
        device: Address,
        /// The slot of that reading.
        #[arg(long)]
        slot: u64,
        /// The contradicting sample and its Merkle proof, hex, as the telemetry endpoint gives them.
        #[arg(long, conflicts_with = "physics", required_unless_present = "physics")]
        proof_hex: Option<String>,
        /// Report a reading that a hard physics check held, instead of a sample.
        #[arg(long)]
        physics: bool,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Grid operator: dismiss an open physics dispute (nothing is slashed).
    DismissDispute {
        /// The device of the disputed reading.
        #[arg(long)]
        device: Address,
        /// The slot of the disputed reading.
        #[arg(long)]
        slot: u64,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Grid operator: ask an area's devices to reduce or increase their draw in a slot, valuing
    /// a kWh of response at --value-per-kwh tokens (the weight of the rewards it earns).
    RequestFlex {
        /// The delivery slot.
        #[arg(long)]
        slot: u64,
        /// Market area, e.g. `street-1` ("" = everyone).
        #[arg(long, default_value = "")]
        area: String,
        /// reduce or increase.
        #[arg(long)]
        direction: gridmesh_ledger::tx::FlexDirection,
        /// What a kWh of response is worth to the grid, tokens.
        #[arg(long)]
        value_per_kwh: String,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Make the key's account a community asset owned in shares (`--holder ADDRESS=SHARES`,
    /// repeated); its market revenue is paid out to the holders pro rata every epoch.
    CreateAsset {
        /// The asset's name for people, e.g. "school roof PV".
        #[arg(long)]
        name: String,
        /// A holder and its shares, ADDRESS=SHARES; repeat for each.
        #[arg(long = "holder", value_name = "ADDRESS=SHARES", required = true)]
        holders: Vec<String>,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Move shares of a community asset to another account.
    TransferShares {
        /// The asset's address.
        #[arg(long)]
        asset: Address,
        /// The account that receives the shares: checksummed (`gm1…`) or 64 hex characters.
        #[arg(long)]
        to: Address,
        /// How many shares.
        #[arg(long)]
        shares: u64,
        /// Send even though the chain has never seen the receiving address.
        #[arg(long)]
        new_recipient: bool,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Drop the key's transactions waiting on the node behind a missing nonce (sent with a
    /// nonce too far ahead): they would otherwise run as soon as the missing nonces come, or
    /// hold their deposits until they expire. Ready ones stay (they may be in a block already).
    DropGapped {
        /// Drop only those from this nonce up (default: all that wait behind a gap).
        #[arg(long)]
        from_nonce: Option<u64>,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Transfer tokens.
    Transfer {
        /// The receiving account: checksummed (`gm1…`, as `keys show` prints it) or 64 hex
        /// characters.
        #[arg(long)]
        to: Address,
        /// Amount in tokens, e.g. 12.5 (up to 6 decimal places).
        #[arg(long)]
        amount: Amount,
        /// Send even though the chain has never seen the receiving address (a new member's or
        /// device's first tokens). Without it such a transfer is refused: an unknown address is
        /// most likely a typo.
        #[arg(long)]
        new_recipient: bool,
        #[command(flatten)]
        common: TxCommon,
    },
}

#[derive(Args)]
pub(crate) struct TxCommon {
    /// The key file that signs: the transaction is its account's.
    #[arg(long)]
    key: PathBuf,
    /// Nonce to use (default: the account's next nonce on the node).
    #[arg(long)]
    nonce: Option<u64>,
    /// Return once the node accepted the transaction, without waiting for the block.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    node: NodeUrl,
    /// Print the committed transaction (or, with --no-wait, the accepted one) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Signs a transaction of `kind` with the common key, submits it and (unless --no-wait) waits for
/// its block; prints the receipt's events.
pub(crate) fn submit_kind(common: &TxCommon, kind: TxKind, what: &str) -> anyhow::Result<()> {
    let key = crate::keyfile::load(&common.key)?;
    let client = Client::new(&common.node.node);
    let status = client.status()?;
    let nonce = match common.nonce {
        Some(n) => n,
        None => client.account(&key.address())?.nonce,
    };
    let tx = gridmesh_ledger::SignedTx::new(&key, &status.chain_id, nonce, kind);
    let accepted = client
        .submit(&tx)
        .with_context(|| format!("{what}: refused"))?;
    if common.no_wait {
        if common.json {
            print_json(&accepted)?;
        } else {
            outln!("submitted {} (pending)", accepted.hash);
        }
        return Ok(());
    }
    let hash: Hash32 = accepted.hash.parse()?;
    let committed = client.wait_committed(&hash, Duration::from_secs(60))?;
    if common.json {
        print_json(&committed)?;
    } else {
        outln!(
            "committed {} in block {}: {what}",
            committed.hash,
            committed.height.unwrap_or_default()
        );
        if let Some(r) = &committed.receipt {
            for e in &r.events {
                outln!(
                    "  {}",
                    e.details.as_ref().map_or(e.kind.clone(), |d| d.to_string())
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn run(command: TxCommand) -> anyhow::Result<()> {
    match command {
        TxCommand::RegisterDevice {
            kind,
            capacity_kw,
            device_key,
            location,
            latitude,
            longitude,
            tilt,
            azimuth,
            bond,
            common,
        } => {
            let w = gridmesh_types::parse_fixed(&capacity_kw, 3)
                .with_context(|| format!("--capacity-kw {capacity_kw:?}"))?;
            let capacity_w = u32::try_from(w).context("--capacity-kw is too large")?;
            if let Some(path) = device_key {
                let device = crate::keyfile::load(&path)
                    .with_context(|| format!("loading the device key {}", path.display()))?;
                let owner = crate::keyfile::load(&common.key)?.address();
                let microdeg = |deg: Option<f64>, what: &str, max: f64| -> anyhow::Result<i32> {
                    let d = deg.unwrap_or(0.0);
                    if !(d.is_finite() && d.abs() <= max) {
                        bail!("--{what} {d} is not within ±{max}°");
                    }
                    Ok((d * 1e6).round() as i32)
                };
                let info = gridmesh_ledger::DeviceInfo {
                    kind,
                    capacity_w,
                    location,
                    latitude_microdeg: microdeg(latitude, "latitude", 90.0)?,
                    longitude_microdeg: microdeg(longitude, "longitude", 180.0)?,
                    tilt_deg: tilt,
                    azimuth_deg: azimuth,
                };
                let chain_id = Client::new(&common.node.node).status()?.chain_id;
                let device_address = device.address();
                return submit_kind(
                    &common,
                    TxKind::register_device_key(&chain_id, &owner, &device, info, bond),
                    &format!(
                        "{} {device_address} of {capacity_kw} kW registered, {bond} tokens bonded",
                        kind.name()
                    ),
                );
            }
            submit_kind(
                &common,
                TxKind::RegisterDevice { kind, capacity_w },
                &format!("{} of {capacity_kw} kW registered", kind.name()),
            )
        }
        TxCommand::Order {
            slot,
            side,
            energy_kwh,
            price,
            location,
            common,
        } => {
            let slot = match slot.as_str() {
                "next" => Client::new(&common.node.node).market()?.next_open_slot,
                s => s
                    .parse()
                    .with_context(|| format!("--slot {s:?} is not a slot number or `next`"))?,
            };
            let energy_mwh = gridmesh_types::units::parse_kwh(&energy_kwh)
                .with_context(|| format!("--energy-kwh {energy_kwh:?}"))?;
            let price_per_kwh = u64::try_from(
                price
                    .parse::<Amount>()
                    .with_context(|| format!("--price {price:?}"))?
                    .0,
            )
            .context("--price is too large")?;
            let what = format!(
                "{} {energy_kwh} kWh at {price} tokens/kWh for slot {slot}",
                side.name()
            );
            submit_kind(
                &common,
                TxKind::PlaceOrder {
                    slot,
                    side,
                    energy_mwh,
                    price_per_kwh,
                    location,
                },
                &what,
            )
        }
        TxCommand::Cancel {
            slot,
            order_id,
            common,
        } => submit_kind(
            &common,
            TxKind::CancelOrder { slot, order_id },
            &format!("cancel order {order_id} of slot {slot}"),
        ),
        TxCommand::Reading {
            slot,
            import_kwh,
            export_kwh,
            common,
        } => {
            let (import_mwh, export_mwh) = import_export(&import_kwh, &export_kwh)?;
            submit_kind(
                &common,
                TxKind::SubmitReading {
                    slot,
                    import_mwh,
                    export_mwh,
                },
                &format!(
                    "reading for slot {slot}: import {import_kwh} kWh, export {export_kwh} kWh"
                ),
            )
        }
        TxCommand::DeviceReading {
            device_key,
            slot,
            out_kwh,
            in_kwh,
            common,
        } => {
            let device = crate::keyfile::load(&device_key)
                .with_context(|| format!("loading the device key {}", device_key.display()))?;
            let out_mwh = kwh_arg(&out_kwh, "--out-kwh")?;
            let in_mwh = kwh_arg(&in_kwh, "--in-kwh")?;
            // The device's register is its owner's to read: signed in as the sender.
            let sender = crate::keyfile::load(&common.key)?;
            let client = Client::new(&common.node.node).signed_in(&sender)?;
            let chain_id = client.status()?.chain_id;
            let view = client.device(&device.address())?.with_context(|| {
                format!(
                    "device {} is not registered: register it first (tx register-device --device-key)",
                    device.address()
                )
            })?;
            if view.owner != sender.address().to_string() {
                bail!(
                    "device {} is {}'s: send its reading with its owner's --key (the register it continues is the owner's to read)",
                    device.address(),
                    view.owner
                );
            }
            let last_mwh = match &view.register_kwh {
                Some(k) => gridmesh_types::units::parse_kwh(k)
                    .with_context(|| format!("the node's register {k:?}"))?,
                None => 0,
            };
            let register_mwh = last_mwh
                .checked_add(out_mwh)
                .context("the device's register would overflow")?;
            // A software device's sample counter: the wall clock in ms, strictly increasing.
            let seq = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64;
            let reading = gridmesh_ledger::tx::DeviceReading::with_one_sample(
                &device,
                &chain_id,
                slot,
                seq,
                (out_mwh, register_mwh),
                (in_mwh, in_mwh),
            );
            submit_kind(
                &common,
                TxKind::SubmitDeviceReadings {
                    readings: vec![reading],
                },
                &format!(
                    "device {} reading for slot {slot}: out {out_kwh} kWh, in {in_kwh} kWh",
                    device.address()
                ),
            )
        }
        TxCommand::Envelope {
            slot,
            location,
            import_kwh,
            export_kwh,
            common,
        } => {
            let (import_mwh, export_mwh) = import_export(&import_kwh, &export_kwh)?;
            submit_kind(
                &common,
                TxKind::SetEnvelope {
                    slot,
                    location: location.clone(),
                    import_mwh,
                    export_mwh,
                },
                &format!("envelope of {location:?} in slot {slot}: import {import_kwh} kWh, export {export_kwh} kWh"),
            )
        }
        TxCommand::GridEvent {
            event,
            at_ms,
            common,
        } => {
            let at_ms = match at_ms {
                Some(t) => t,
                // The chain's clock (which may run faster than the wall clock in simulations).
                None => Client::new(&common.node.node).status()?.timestamp_ms,
            };
            submit_kind(
                &common,
                TxKind::GridEvent { event, at_ms },
                &format!("grid event {} at {at_ms} ms", event.name()),
            )
        }
        TxCommand::ReportFraud {
            device,
            slot,
            proof_hex,
            physics,
            common,
        } => {
            use gridmesh_ledger::tx::FraudEvidence;
            let evidence = match (proof_hex, physics) {
                (Some(h), _) => {
                    let bytes = hex::decode(h.trim())
                        .context("--proof-hex is not hex (copy `proof_hex` from the proof API)")?;
                    FraudEvidence::Commitment(
                        borsh::from_slice(&bytes)
                            .context("--proof-hex does not hold a sample proof")?,
                    )
                }
                (None, _) => FraudEvidence::Physics,
            };
            submit_kind(
                &common,
                TxKind::ReportFraud {
                    device,
                    slot,
                    evidence,
                },
                &format!("fraud report on device {device}, slot {slot}"),
            )
        }
        TxCommand::DismissDispute {
            device,
            slot,
            common,
        } => submit_kind(
            &common,
            TxKind::DismissDispute { device, slot },
            &format!("dispute on device {device}, slot {slot} dismissed"),
        ),
        TxCommand::RequestFlex {
            slot,
            area,
            direction,
            value_per_kwh,
            common,
        } => {
            let value = gridmesh_types::parse_fixed(&value_per_kwh, gridmesh_types::TOKEN_DECIMALS)
                .map_err(|e| anyhow::anyhow!("--value-per-kwh: {e}"))?;
            let value_per_kwh = u64::try_from(value).context("--value-per-kwh is too large")?;
            submit_kind(
                &common,
                TxKind::RequestFlexibility {
                    slot,
                    area: area.clone(),
                    direction,
                    value_per_kwh,
                },
                &format!(
                    "flexibility request: {} in {area:?}, slot {slot}",
                    direction.name()
                ),
            )
        }
        TxCommand::CreateAsset {
            name,
            holders,
            common,
        } => {
            let holders = holders
                .iter()
                .map(|h| {
                    let (a, n) = h
                        .split_once('=')
                        .with_context(|| format!("--holder {h:?}: expected ADDRESS=SHARES"))?;
                    Ok(gridmesh_ledger::tx::Shareholding {
                        holder: a.parse().with_context(|| format!("--holder {h:?}"))?,
                        shares: n
                            .parse()
                            .with_context(|| format!("--holder {h:?}: shares must be a number"))?,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            submit_kind(
                &common,
                TxKind::CreateAsset {
                    name: name.clone(),
                    holders,
                },
                &format!("community asset {name:?}"),
            )
        }
        TxCommand::TransferShares {
            asset,
            to,
            shares,
            new_recipient,
            common,
        } => {
            refuse_unknown(&common, &to, new_recipient)?;
            submit_kind(
                &common,
                TxKind::TransferShares { asset, to, shares },
                &format!("{shares} shares of {asset} to {}", to.checksummed()),
            )
        }
        TxCommand::DropGapped { from_nonce, common } => {
            let key = crate::keyfile::load(&common.key)?;
            let client = Client::new(&common.node.node);
            let token = client.sign_in(&key)?;
            let d = client.drop_gapped(&key.address(), &token, from_nonce)?;
            if common.json {
                return print_json(&d);
            }
            if d.dropped.is_empty() {
                outln!("nothing waits behind a missing nonce for this key");
            }
            for t in &d.dropped {
                outln!("dropped {} (nonce {})", t.hash, t.nonce);
            }
            outln!(
                "next nonce {}; still pending: {} ready, {} behind a gap",
                d.pending.next_nonce,
                d.pending.ready.len(),
                d.pending.gapped.len()
            );
            Ok(())
        }
        TxCommand::Transfer {
            to,
            amount,
            new_recipient,
            common,
        } => {
            let from = crate::keyfile::load(&common.key)?.address();
            refuse_unknown(&common, &to, new_recipient)?;
            submit_kind(
                &common,
                TxKind::Transfer { to, amount },
                &format!(
                    "{amount} tokens from {} to {}",
                    from.checksummed(),
                    to.checksummed()
                ),
            )
        }
    }
}

/// Refuses to send to an address the chain has never seen, unless `new_recipient`: a slip in a
/// hex address has no checksum to catch it, and tokens sent there are lost to everyone.
fn refuse_unknown(common: &TxCommon, to: &Address, new_recipient: bool) -> anyhow::Result<()> {
    if new_recipient {
        return Ok(());
    }
    let account = Client::new(&common.node.node).account(to)?;
    if !account.known {
        bail!(
            "the chain has never seen {} (no tokens, no transaction, no device): check the \
             address for a typo; if it is a new member's or device's, send again with \
             --new-recipient",
            to.checksummed()
        );
    }
    Ok(())
}

/// The `--import-kwh` and `--export-kwh` pair of a reading or an envelope, in mWh.
fn import_export(import_kwh: &str, export_kwh: &str) -> anyhow::Result<(u64, u64)> {
    Ok((
        kwh_arg(import_kwh, "--import-kwh")?,
        kwh_arg(export_kwh, "--export-kwh")?,
    ))
}
