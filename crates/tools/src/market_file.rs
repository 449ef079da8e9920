//! Offline clearing (`gridmesh market clear`): an order file in, the same clearing code the
//! ledger runs, a JSON result out.
//!
//! Input (numbers may be JSON numbers or decimal strings; at most 6 decimals):
//!
//! ```json
//! {"orders": [{"id": "b1", "side": "bid", "energy_kwh": 1.0, "price_per_kwh": 4.0,
//!              "location": "street-1/house-4", "time": 0}],
//!  "tariff": {"retail_per_kwh": "0.30", "feed_in_per_kwh": "0.08"},
//!  "grid_fees": [{"constant_per_kwh": "0.02", "percent": "0"}, {"constant_per_kwh": "0.01"}]}
//! ```
//!
//! `location` (optional) places an order in a market area ("street/house"); `grid_fees` lists the
//! fee of each depth of that hierarchy, root first. `time` (optional, default 0) is the arrival
//! order; orders with equal price and time are ranked by `id` (string order). `tariff` is needed
//! by the community mechanism and adds the utility as counterparty of last resort.

use std::collections::BTreeSet;
use std::str::FromStr;

use anyhow::{bail, Context};
use gridmesh_market::{
    clear, Areas, Clearing, GridFee, Mechanism, Order, Side, Tariff, MAX_ORDERS_PER_SLOT,
};
use gridmesh_types::units::{format_kwh, parse_kwh};
use gridmesh_types::{format_fixed, parse_fixed, TOKEN_DECIMALS};
use serde::{Deserialize, Deserializer, Serialize};

/// Longest order id in a file.
pub const MAX_ID_LEN: usize = 64;

/// A decimal read from a JSON number or string, kept as its exact text.
#[derive(Clone, Debug)]
pub struct Decimal(String);

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => Ok(Decimal(n.to_string())),
            serde_json::Value::String(s) => Ok(Decimal(s)),
            other => Err(serde::de::Error::custom(format!(
                "expected a number or a decimal string, got {other}"
            ))),
        }
    }
}

impl Decimal {
    fn kwh(&self, what: &str) -> anyhow::Result<u64> {
        parse_kwh(&self.0).with_context(|| format!("{what}: {:?} is not an energy in kWh", self.0))
    }

    fn price(&self, what: &str) -> anyhow::Result<u64> {
        let v = parse_fixed(&self.0, TOKEN_DECIMALS)
            .with_context(|| format!("{what}: {:?} is not a price in tokens per kWh", self.0))?;
        u64::try_from(v).with_context(|| format!("{what}: {:?} is too large", self.0))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOrder {
    id: String,
    side: String,
    energy_kwh: Decimal,
    price_per_kwh: Decimal,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    time: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTariff {
    retail_per_kwh: Decimal,
    feed_in_per_kwh: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFee {
    #[serde(default)]
    constant_per_kwh: Option<Decimal>,
    /// Percent of the order's limit price, up to two decimals.
    #[serde(default)]
    percent: Option<Decimal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderFile {
    orders: Vec<FileOrder>,
    #[serde(default)]
    tariff: Option<FileTariff>,
    #[serde(default)]
    grid_fees: Vec<FileFee>,
}

/// An order file, checked and converted to the integers the market crate works with.
pub struct OrderSet {
    pub orders: Vec<Order>,
    /// `ids[i]` is the file's id of the order with numeric id `i` (ids are numbered in string order).
    pub ids: Vec<String>,
    pub areas: Areas,
    pub tariff: Option<Tariff>,
}

impl OrderSet {
    /// Parses and checks an order file's JSON text.
    pub fn parse(json: &str) -> anyhow::Result<OrderSet> {
        let file: OrderFile = serde_json::from_str(json).context("reading the order file")?;
        if file.orders.len() > MAX_ORDERS_PER_SLOT {
            bail!(
                "{} orders, more than the limit of {MAX_ORDERS_PER_SLOT}",
                file.orders.len()
            );
        }
        let mut fees = Vec::new();
        for (depth, f) in file.grid_fees.iter().enumerate() {
            let what = format!("grid_fees[{depth}]");
            let constant_per_kwh = match &f.constant_per_kwh {
                Some(d) => d.price(&what)?,
                None => 0,
            };
            let percent_bps = match &f.percent {
                Some(d) => {
                    let v = parse_fixed(&d.0, 2)
                        .with_context(|| format!("{what}: percent {:?} (up to 2 decimals)", d.0))?;
                    if v > 10_000 {
                        bail!("{what}: percent {} is above 100", d.0);
                    }
                    v as u32
                }
                None => 0,
            };
            fees.push(GridFee {
                constant_per_kwh,
                percent_bps,
            });
        }
        let areas = Areas::from_paths(
            file.orders.iter().filter_map(|o| o.location.as_deref()),
            &fees,
        )?;
        let tariff = match &file.tariff {
            Some(t) => {
                let t = Tariff {
                    retail_per_kwh: t.retail_per_kwh.price("tariff.retail_per_kwh")?,
                    feed_in_per_kwh: t.feed_in_per_kwh.price("tariff.feed_in_per_kwh")?,
                };
                t.check()?;
                Some(t)
            }
            None => None,
        };
        let mut ids = BTreeSet::new();
        for o in &file.orders {
            if o.id.is_empty() || o.id.len() > MAX_ID_LEN {
                bail!("order id {:?} must be 1 to {MAX_ID_LEN} characters", o.id);
            }
            if !ids.insert(o.id.as_str()) {
                bail!("order id {:?} appears twice", o.id);
            }
        }
        let ids: Vec<String> = ids.into_iter().map(str::to_string).collect();
        let mut orders = Vec::with_capacity(file.orders.len());
        for o in &file.orders {
            let what = format!("order {:?}", o.id);
            let side = match o.side.as_str() {
                "bid" => Side::Bid,
                "ask" => Side::Ask,
                other => bail!("{what}: side {other:?} must be \"bid\" or \"ask\""),
            };
            let energy_mwh = o.energy_kwh.kwh(&what)?;
            if energy_mwh == 0 {
                bail!("{what}: energy_kwh must be greater than zero");
            }
            let area = match o.location.as_deref() {
                None | Some("") => 0,
                Some(loc) => areas.find(loc).expect("every location made an area"),
            };
            orders.push(Order {
                id: ids.binary_search(&o.id).expect("collected above") as u64,
                side,
                energy_mwh,
                price_per_kwh: o.price_per_kwh.price(&what)?,
                time: o.time,
                area,
            });
        }
        gridmesh_market::check_orders(&orders, &areas)?;
        Ok(OrderSet {
            orders,
            ids,
            areas,
            tariff,
        })
    }

    /// Clears the set with `mechanism`.
    pub fn clear(&self, mechanism: Mechanism) -> anyhow::Result<ClearReport> {
        let c = clear(&self.orders, &self.areas, mechanism, self.tariff)?;
        Ok(ClearReport::new(&c, self))
    }
}

/// A decimal as a JSON number (exact decimal text, read back as the nearest double).
fn number(text: String) -> serde_json::Number {
    serde_json::Number::from_str(&text).expect("decimal text is a JSON number")
}

fn tokens(base_units: u128) -> serde_json::Number {
    number(format_fixed(base_units, TOKEN_DECIMALS))
}

fn kwh(mwh: u64) -> serde_json::Number {
    number(format_kwh(mwh))
}

#[derive(Serialize)]
pub struct TradeOut {
    pub bid: String,
    pub ask: String,
    pub energy_kwh: serde_json::Number,
    /// What the buyer pays per kWh, grid fees included.
    pub price_per_kwh: serde_json::Number,
    /// What the seller keeps per kWh.
    pub seller_price_per_kwh: serde_json::Number,
    pub fee_per_kwh: serde_json::Number,
    /// The market area where the orders met ("" is the root).
    pub area: String,
}

#[derive(Serialize)]
pub struct UtilityOut {
    pub order: String,
    /// "buy" from or "sell" to the utility.
    pub direction: &'static str,
    pub energy_kwh: serde_json::Number,
    pub price_per_kwh: serde_json::Number,
}

/// The JSON result of `gridmesh market clear`.
#[derive(Serialize)]
pub struct ClearReport {
    pub mechanism: String,
    /// The uniform price, where the mechanism has one (null otherwise or without trades).
    pub clearing_price_per_kwh: Option<serde_json::Number>,
    pub volume_kwh: serde_json::Number,
    pub trades: Vec<TradeOut>,
    pub utility_trades: Vec<UtilityOut>,
    /// Gains from trade achieved, in tokens.
    pub welfare: serde_json::Number,
    /// The maximum gains from trade of these orders (no fees, no areas), in tokens.
    pub optimal_welfare: serde_json::Number,
    /// welfare / optimal_welfare (null when nothing could trade).
    pub efficiency: Option<f64>,
}

impl ClearReport {
    pub fn new(c: &Clearing, set: &OrderSet) -> ClearReport {
        let id = |i: u64| set.ids[i as usize].clone();
        ClearReport {
            mechanism: c.mechanism.name().to_string(),
            clearing_price_per_kwh: c.clearing_price_per_kwh.map(|p| tokens(p.into())),
            volume_kwh: kwh(c.volume_mwh),
            trades: c
                .trades
                .iter()
                .map(|t| TradeOut {
                    bid: id(t.bid),
                    ask: id(t.ask),
                    energy_kwh: kwh(t.energy_mwh),
                    price_per_kwh: tokens(t.buyer_price_per_kwh.into()),
                    seller_price_per_kwh: tokens(t.seller_price_per_kwh.into()),
                    fee_per_kwh: tokens(t.fee_per_kwh.into()),
                    area: set.areas.path(t.area).to_string(),
                })
                .collect(),
            utility_trades: c
                .utility
                .iter()
                .map(|u| UtilityOut {
                    order: id(u.order),
                    direction: match u.side {
                        Side::Bid => "buy",
                        Side::Ask => "sell",
                    },
                    energy_kwh: kwh(u.energy_mwh),
                    price_per_kwh: tokens(u.price_per_kwh.into()),
                })
                .collect(),
            welfare: tokens(c.welfare),
            optimal_welfare: tokens(c.optimal_welfare),
            efficiency: (c.optimal_welfare > 0)
                .then(|| c.welfare as f64 / c.optimal_welfare as f64),
        }
    }
}

impl std::fmt::Display for ClearReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "mechanism:        {}", self.mechanism)?;
        match &self.clearing_price_per_kwh {
            Some(p) => writeln!(f, "clearing price:   {p} per kWh")?,
            None => writeln!(f, "clearing price:   none (no uniform price)")?,
        }
        writeln!(
            f,
            "volume:           {} kWh in {} trades",
            self.volume_kwh,
            self.trades.len()
        )?;
        let eff = self
            .efficiency
            .map_or("-".to_string(), |e| format!("{:.1}%", e * 100.0));
        writeln!(
            f,
            "welfare:          {} of an optimal {} ({eff})",
            self.welfare, self.optimal_welfare
        )?;
        for t in &self.trades {
            writeln!(
                f,
                "  {} <- {}: {} kWh at {} (seller keeps {}, fees {})",
                t.bid, t.ask, t.energy_kwh, t.price_per_kwh, t.seller_price_per_kwh, t.fee_per_kwh
            )?;
        }
        for u in &self.utility_trades {
            writeln!(
                f,
                "  {} {}s {} kWh at {} with the utility",
                u.order, u.direction, u.energy_kwh, u.price_per_kwh
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_parse_exactly() {
        let set = OrderSet::parse(
            r#"{"orders": [
                {"id": "b1", "side": "bid", "energy_kwh": 1.0, "price_per_kwh": "4"},
                {"id": "a1", "side": "ask", "energy_kwh": "0.5", "price_per_kwh": 0.1}
            ]}"#,
        )
        .unwrap();
        assert_eq!(set.ids, vec!["a1", "b1"]);
        assert_eq!(set.orders[0].energy_mwh, 1_000_000);
        assert_eq!(set.orders[0].price_per_kwh, 4_000_000);
        assert_eq!(set.orders[1].price_per_kwh, 100_000);
        let r = set.clear(Mechanism::PayAsClear).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["clearing_price_per_kwh"].as_f64(), Some(4.0));
        assert_eq!(v["volume_kwh"].as_f64(), Some(0.5));
        assert_eq!(v["trades"][0]["bid"], "b1");
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let cases = [
            (
                r#"{"orders": [{"id": "x", "side": "buy", "energy_kwh": 1, "price_per_kwh": 1}]}"#,
                "side",
            ),
            (
                r#"{"orders": [{"id": "x", "side": "bid", "energy_kwh": -1, "price_per_kwh": 1}]}"#,
                "energy",
            ),
            (
                r#"{"orders": [{"id": "x", "side": "bid", "energy_kwh": 0, "price_per_kwh": 1}]}"#,
                "greater than zero",
            ),
            (
                r#"{"orders": [{"id": "x", "side": "bid", "energy_kwh": 1e-9, "price_per_kwh": 1}]}"#,
                "energy",
            ),
            (
                r#"{"orders": [{"id": "x", "side": "bid", "energy_kwh": 1, "price_per_kwh": 1},
                           {"id": "x", "side": "ask", "energy_kwh": 1, "price_per_kwh": 1}]}"#,
                "twice",
            ),
            (
                r#"{"orders": [{"id": "x", "side": "bid", "energy_kwh": 1, "price_per_kwh": 1, "location": "a//b"}]}"#,
                "location",
            ),
            (
                r#"{"orders": [], "tariff": {"retail_per_kwh": 0.1, "feed_in_per_kwh": 0.2}}"#,
                "feed-in",
            ),
            (
                r#"{"orders": [{"id": "x", "side": "bid", "energy_kwh": 1, "price": 1}]}"#,
                "unknown field",
            ),
            (r#"{"orders": "#, "order file"),
        ];
        for (json, needle) in cases {
            let err = match OrderSet::parse(json) {
                Ok(_) => panic!("{json} should fail"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(needle), "{json}: {err}");
        }
        let set = OrderSet::parse(r#"{"orders": []}"#).unwrap();
        let err = set.clear(Mechanism::Community).err().unwrap().to_string();
        assert!(err.contains("tariff"), "{err}");
    }
}
