//! SunSpec over Modbus TCP: discover an inverter's or battery's models by walking its register
//! map, read what it produced and consumed, set power and storage limits that revert by
//! themselves, and turn the measurements into signed telemetry.
//!
//! Models read (offsets from the model's ID register, per the SunSpec model definitions):
//!
//! | model | what | points |
//! |---|---|---|
//! | 1 | common | Mn (2), Md (18), SN (50): 16-register strings |
//! | 101-103 | inverter | W (14) × 10^W_SF (15), WH (24, acc32) × 10^WH_SF (26) |
//! | 123 | immediate controls | WMaxLimPct (5), _WinTms (6), _RvrtTms (7), _RmpTms (8), WMaxLim_Ena (9), WMaxLimPct_SF (23) |
//! | 124 | storage | StorCtl_Mod (5), ChaState (8) × 10^ChaState_SF (22), OutWRte (12), InWRte (13), InOutWRte_WinTms/RvrtTms/RmpTms (14-16), InOutWRte_SF (25) |
//! | 802 | battery | SoC (11) × 10^SoC_SF (56) |
//! | 201-204 | meter | W (18) × 10^W_SF (22), TotWhExp (38), TotWhImp (46), acc32 × 10^TotWh_SF (54) |
//!
//! Unimplemented points (0x8000 for int16, 0xFFFF for uint16, 0 for an accumulator) read as
//! absent. Every control we write carries a reversion timeout: if the node stops refreshing it (it
//! died, the network failed), the device returns to its own default on its own.

use gridmesh_ledger::crypto::Keypair;
use gridmesh_ledger::telemetry::RawSample;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::Slave;

/// Where SunSpec maps start ("SunS" at the first register).
pub const BASE_ADDRESSES: [u16; 3] = [40000, 0, 50000];
/// Most models walked in one map.
pub const MAX_MODELS: usize = 64;
/// Longest time one Modbus request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum SunSpecError {
    #[error("cannot reach the Modbus device at {addr}: {error}")]
    Connect {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("Modbus request at register {addr} failed: {reason}")]
    Request { addr: u16, reason: String },
    #[error("no SunSpec map (\"SunS\") at registers 40000, 0 or 50000")]
    NotSunSpec,
    #[error("the SunSpec map is malformed: {0}")]
    Malformed(String),
    #[error("the device has no model {0}")]
    MissingModel(u16),
    #[error("{0}")]
    BadControl(String),
}

/// One model of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModelRef {
    pub id: u16,
    /// Register of its ID (the length follows; the points start 2 further).
    pub start: u16,
    pub len: u16,
}

/// What the device says it is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
}

/// One reading of the device.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Measurement {
    /// Positive out of the device (production, discharge).
    pub power_w: Option<i32>,
    /// Cumulative energy produced or discharged.
    pub out_register_mwh: Option<u64>,
    /// Cumulative energy consumed or charged.
    pub in_register_mwh: Option<u64>,
    /// State of charge, percent.
    pub soc_pct: Option<f64>,
    /// Whether a power limit (model 123) is in force, and at what percent.
    pub power_limit_pct: Option<f64>,
    /// Storage control mode bits of model 124 (1 charge, 2 discharge limited).
    pub storage_control: Option<u16>,
    /// The battery's charge rating (model 124's WChaMax), W: what its rate percents are of.
    pub charge_max_w: Option<f64>,
}

/// A connected SunSpec device and its map.
pub struct SunSpecDevice {
    ctx: Context,
    pub base: u16,
    pub models: Vec<ModelRef>,
    /// Model 124's fixed points, read once: the charge rating (W) its rates are percents of,
    /// and the rates' scale factor.
    storage_rating: Option<(f64, i32)>,
}

async fn read(ctx: &mut Context, addr: u16, count: u16) -> Result<Vec<u16>, SunSpecError> {
    let fail = |reason: String| SunSpecError::Request { addr, reason };
    match tokio::time::timeout(REQUEST_TIMEOUT, ctx.read_holding_registers(addr, count)).await {
        Err(_) => Err(fail(format!("no answer within {REQUEST_TIMEOUT:?}"))),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Ok(Ok(Err(code))) => Err(fail(format!("exception {code:?}"))),
        Ok(Ok(Ok(words))) if words.len() == count as usize => Ok(words),
        Ok(Ok(Ok(words))) => Err(fail(format!("{} of {count} registers", words.len()))),
    }
}

async fn write(ctx: &mut Context, addr: u16, words: &[u16]) -> Result<(), SunSpecError> {
    let fail = |reason: String| SunSpecError::Request { addr, reason };
    match tokio::time::timeout(REQUEST_TIMEOUT, ctx.write_multiple_registers(addr, words)).await {
        Err(_) => Err(fail(format!("no answer within {REQUEST_TIMEOUT:?}"))),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Ok(Ok(Err(code))) => Err(fail(format!("exception {code:?}"))),
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

fn string(words: &[u16]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

fn sf(word: u16) -> Option<i32> {
    (word != 0x8000).then_some(i32::from(word as i16))
}

fn int16(word: u16) -> Option<i32> {
    (word != 0x8000).then_some(i32::from(word as i16))
}

fn uint16(word: u16) -> Option<u32> {
    (word != 0xFFFF).then_some(u32::from(word))
}

fn acc32(hi: u16, lo: u16) -> Option<u64> {
    let v = (u64::from(hi) << 16) | u64::from(lo);
    (v != 0).then_some(v)
}

/// `value × 10^sf` Wh in mWh, exactly (integers).
fn wh_to_mwh(value: u64, sf: i32) -> u64 {
    let e = sf + 3;
    if e >= 0 {
        value.saturating_mul(10u64.saturating_pow(e as u32))
    } else {
        value / 10u64.saturating_pow((-e) as u32)
    }
}

fn scaled(value: i64, sf: i32) -> f64 {
    value as f64 * 10f64.powi(sf)
}

impl SunSpecDevice {
    /// Connects to unit `unit` at `addr` and walks its SunSpec map.
    pub async fn connect(addr: SocketAddr, unit: u8) -> Result<SunSpecDevice, SunSpecError> {
        let mut ctx = tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio_modbus::client::tcp::connect_slave(addr, Slave(unit)),
        )
        .await
        .map_err(|_| SunSpecError::Connect {
            addr,
            error: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        })?
        .map_err(|error| SunSpecError::Connect { addr, error })?;
        let (base, models) = discover(&mut ctx).await?;
        Ok(SunSpecDevice {
            ctx,
            base,
            models,
            storage_rating: None,
        })
    }

    pub fn model(&self, id: u16) -> Option<ModelRef> {
        self.models.iter().copied().find(|m| m.id == id)
    }

    fn first_of(&self, ids: &[u16]) -> Option<ModelRef> {
        self.models.iter().copied().find(|m| ids.contains(&m.id))
    }

    /// The whole model, ID and length included (in requests of at most 125 registers).
    async fn read_model(&mut self, m: ModelRef) -> Result<Vec<u16>, SunSpecError> {
        let total = m.len + 2;
        let mut out = Vec::with_capacity(total as usize);
        let mut at = 0u16;
        while at < total {
            let n = (total - at).min(125);
            out.extend(read(&mut self.ctx, m.start + at, n).await?);
            at += n;
        }
        Ok(out)
    }

    /// Manufacturer, model and serial number (model 1).
    pub async fn identity(&mut self) -> Result<Identity, SunSpecError> {
        let m = self.model(1).ok_or(SunSpecError::MissingModel(1))?;
        let r = self.read_model(m).await?;
        if r.len() < 66 {
            return Err(SunSpecError::Malformed("model 1 is too short".into()));
        }
        Ok(Identity {
            manufacturer: string(&r[2..18]),
            model: string(&r[18..34]),
            serial: string(&r[50..66]),
        })
    }

    /// Power, energy registers, state of charge and the controls in force.
    pub async fn measure(&mut self) -> Result<Measurement, SunSpecError> {
        self.measure_with(true).await
    }

    /// What changes from one second to the next: power, energy registers and the state of
    /// charge, without the controls (models 123 and 124, unless 124 is where the state of charge
    /// is): a poll's reading in fewer requests. Their fields stay `None`.
    pub async fn measure_changing(&mut self) -> Result<Measurement, SunSpecError> {
        self.measure_with(false).await
    }

    async fn measure_with(&mut self, controls: bool) -> Result<Measurement, SunSpecError> {
        let mut out = Measurement::default();
        if let Some(m) = self.first_of(&[201, 202, 203, 204]) {
            let r = self.read_model(m).await?;
            check_len(&r, 55, m.id)?;
            if let (Some(w), Some(s)) = (int16(r[18]), sf(r[22])) {
                out.power_w = Some(scaled(i64::from(w), s).round() as i32);
            }
            if let Some(s) = sf(r[54]) {
                out.out_register_mwh = acc32(r[38], r[39]).map(|v| wh_to_mwh(v, s));
                out.in_register_mwh = acc32(r[46], r[47]).map(|v| wh_to_mwh(v, s));
            }
        }
        if let Some(m) = self.first_of(&[101, 102, 103]) {
            let r = self.read_model(m).await?;
            check_len(&r, 27, m.id)?;
            if let (Some(w), Some(s)) = (int16(r[14]), sf(r[15])) {
                out.power_w = Some(scaled(i64::from(w), s).round() as i32);
            }
            if let (Some(wh), Some(s)) = (acc32(r[24], r[25]), sf(r[26])) {
                out.out_register_mwh = Some(wh_to_mwh(wh, s));
            }
        }
        if let Some(m) = self.model(802) {
            let r = self.read_model(m).await?;
            check_len(&r, 57, m.id)?;
            if let (Some(v), Some(s)) = (uint16(r[11]), sf(r[56])) {
                out.soc_pct = Some(scaled(i64::from(v), s));
            }
        }
        if let Some(m) = self
            .model(124)
            .filter(|_| controls || out.soc_pct.is_none())
        {
            let r = self.read_model(m).await?;
            check_len(&r, 26, m.id)?;
            out.storage_control = Some(r[5]);
            if let (Some(v), Some(s)) = (uint16(r[2]), sf(r[18])) {
                out.charge_max_w = Some(scaled(i64::from(v), s));
            }
            if out.soc_pct.is_none() {
                if let (Some(v), Some(s)) = (uint16(r[8]), sf(r[22])) {
                    out.soc_pct = Some(scaled(i64::from(v), s));
                }
            }
        }
        if let Some(m) = self.model(123).filter(|_| controls) {
            let r = self.read_model(m).await?;
            check_len(&r, 24, m.id)?;
            if r[9] == 1 {
                if let (Some(v), Some(s)) = (uint16(r[5]), sf(r[23])) {
                    out.power_limit_pct = Some(scaled(i64::from(v), s));
                }
            }
        }
        Ok(out)
    }

    /// Limits output to `pct` percent of its rating (model 123) until `revert` passes without
    /// this being written again.
    pub async fn set_power_limit(
        &mut self,
        pct: f64,
        revert: Duration,
    ) -> Result<(), SunSpecError> {
        if !(0.0..=100.0).contains(&pct) {
            return Err(SunSpecError::BadControl(format!(
                "power limit {pct} % is not 0 to 100"
            )));
        }
        let m = self.model(123).ok_or(SunSpecError::MissingModel(123))?;
        let r = self.read_model(m).await?;
        check_len(&r, 24, 123)?;
        let s = sf(r[23]).unwrap_or(0);
        let raw = (pct / 10f64.powi(s)).round() as u16;
        let revert_s = revert_seconds(revert)?;
        // WMaxLimPct, _WinTms, _RvrtTms, _RmpTms, WMaxLim_Ena: one write.
        write(&mut self.ctx, m.start + 5, &[raw, 0, revert_s, 0, 1]).await
    }

    /// Limits charging and discharging to percents of WChaMax (model 124) until `revert` passes
    /// without this being written again; `None` leaves that direction unlimited.
    pub async fn set_storage_rates(
        &mut self,
        charge_pct: Option<f64>,
        discharge_pct: Option<f64>,
        revert: Duration,
    ) -> Result<(), SunSpecError> {
        let m = self.model(124).ok_or(SunSpecError::MissingModel(124))?;
        let r = self.read_model(m).await?;
        check_len(&r, 26, 124)?;
        let s = sf(r[25]).unwrap_or(0);
        let raw = |p: Option<f64>| -> Result<u16, SunSpecError> {
            let p = p.unwrap_or(100.0);
            if !(0.0..=100.0).contains(&p) {
                return Err(SunSpecError::BadControl(format!(
                    "rate {p} % is not 0 to 100"
                )));
            }
            Ok((p / 10f64.powi(s)).round() as i16 as u16)
        };
        let revert_s = revert_seconds(revert)?;
        let (out_raw, in_raw) = (raw(discharge_pct)?, raw(charge_pct)?);
        write(
            &mut self.ctx,
            m.start + 12,
            &[out_raw, in_raw, 0, revert_s, 0],
        )
        .await?;
        let mode = u16::from(charge_pct.is_some()) | (u16::from(discharge_pct.is_some()) << 1);
        write(&mut self.ctx, m.start + 5, &[mode]).await
    }
}

impl SunSpecDevice {
    /// Holds the battery at `power_w` (positive discharging, negative charging) until `revert`
    /// passes without this being written again, through model 124's rate window: both
    /// directions limited (StorCtl_Mod 3), the wanted direction's rate at the setpoint and the
    /// other's at its negative (a negative rate forces that much the other way), so the window
    /// holds the setpoint alone. 0 holds the battery idle. Rates are percents of WChaMax.
    pub async fn set_storage_setpoint(
        &mut self,
        power_w: f64,
        revert: Duration,
    ) -> Result<(), SunSpecError> {
        let m = self.model(124).ok_or(SunSpecError::MissingModel(124))?;
        let (rating_w, s) = match self.storage_rating {
            Some(known) => known,
            None => {
                let r = self.read_model(m).await?;
                check_len(&r, 26, 124)?;
                let rating_w =
                    match (uint16(r[2]), sf(r[18])) {
                        (Some(v), Some(s)) if v > 0 => scaled(i64::from(v), s),
                        _ => return Err(SunSpecError::Malformed(
                            "model 124 has no WChaMax: its rates have nothing to be percents of"
                                .into(),
                        )),
                    };
                let known = (rating_w, sf(r[25]).unwrap_or(0));
                self.storage_rating = Some(known);
                known
            }
        };
        if !power_w.is_finite() {
            return Err(SunSpecError::BadControl(format!(
                "battery setpoint {power_w} W is not a number"
            )));
        }
        let pct = (power_w.abs() / rating_w * 100.0).min(100.0);
        let raw = |p: f64| (p / 10f64.powi(s)).round() as i16 as u16;
        let (out_pct, in_pct) = if power_w >= 0.0 {
            (pct, -pct)
        } else {
            (-pct, pct)
        };
        let revert_s = revert_seconds(revert)?;
        write(
            &mut self.ctx,
            m.start + 12,
            &[raw(out_pct), raw(in_pct), 0, revert_s, 0],
        )
        .await?;
        write(&mut self.ctx, m.start + 5, &[3]).await
    }
}

fn revert_seconds(revert: Duration) -> Result<u16, SunSpecError> {
    let s = revert.as_secs();
    if s == 0 || s > u64::from(u16::MAX) {
        return Err(SunSpecError::BadControl(format!(
            "a reversion timeout must be 1 to 65535 s (got {revert:?}); without one a device \
             keeps our setting after we are gone"
        )));
    }
    Ok(s as u16)
}

fn check_len(r: &[u16], need: usize, id: u16) -> Result<(), SunSpecError> {
    if r.len() < need {
        return Err(SunSpecError::Malformed(format!(
            "model {id} has {} registers, fewer than the {need} read",
            r.len()
        )));
    }
    Ok(())
}

async fn discover(ctx: &mut Context) -> Result<(u16, Vec<ModelRef>), SunSpecError> {
    for base in BASE_ADDRESSES {
        let Ok(id) = read(ctx, base, 2).await else {
            continue;
        };
        if id != [0x5375, 0x6E53] {
            continue;
        }
        let mut models = Vec::new();
        let mut at = base + 2;
        loop {
            let head = read(ctx, at, 2).await?;
            if head[0] == 0xFFFF {
                break;
            }
            if models.len() == MAX_MODELS {
                return Err(SunSpecError::Malformed(format!(
                    "more than {MAX_MODELS} models"
                )));
            }
            models.push(ModelRef {
                id: head[0],
                start: at,
                len: head[1],
            });
            at = at.checked_add(2 + head[1]).ok_or_else(|| {
                SunSpecError::Malformed("the map runs past register 65535".into())
            })?;
        }
        if models.first().map(|m| m.id) != Some(1) {
            return Err(SunSpecError::Malformed(
                "the first model is not model 1".into(),
            ));
        }
        return Ok((base, models));
    }
    Err(SunSpecError::NotSunSpec)
}

/// A signed sample of a measurement (`None` registers read as 0; the sequence is the time).
pub fn sample(key: &Keypair, chain_id: &str, time_ms: u64, m: &Measurement) -> RawSample {
    RawSample::signed(
        key,
        chain_id,
        time_ms,
        time_ms,
        m.out_register_mwh.unwrap_or(0),
        m.in_register_mwh.unwrap_or(0),
        m.power_w.unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_factors_and_unimplemented_points() {
        assert_eq!(wh_to_mwh(12_345, 1), 123_450_000);
        assert_eq!(wh_to_mwh(12_345, -3), 12_345);
        assert_eq!(wh_to_mwh(12_345, -5), 123);
        assert_eq!(sf(0xFFFF), Some(-1));
        assert_eq!(sf(0x8000), None);
        assert_eq!(int16(0xFC18), Some(-1_000));
        assert_eq!(uint16(0xFFFF), None);
        assert_eq!(acc32(0, 0), None);
        assert_eq!(acc32(1, 2), Some(65_538));
        assert_eq!(string(&[0x6772, 0x6964, 0]), "grid");
        assert!(revert_seconds(Duration::ZERO).is_err());
        assert_eq!(revert_seconds(Duration::from_secs(30)).unwrap(), 30);
    }
}
