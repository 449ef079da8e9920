//! `gridmesh bench market`: time to clear one slot of n orders, per mechanism, and pymarket's
//! Huang auction on the very same order sets, side by side.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridmesh_market::{clear, Areas, Mechanism, Order, Side};
use serde::Serialize;

pub struct MarketBenchOptions {
    pub sizes: Vec<usize>,
    pub mechanisms: Vec<Mechanism>,
    /// Timed runs per size and mechanism (the median is reported).
    pub repeat: usize,
    /// The Python with pymarket; `None` skips the comparison.
    pub python: Option<PathBuf>,
    /// Largest order set given to pymarket (its Huang auction is quadratic).
    pub pymarket_max: usize,
    /// Give up on pymarket after this long per size.
    pub pymarket_timeout: Duration,
}

#[derive(Serialize, Clone, Debug)]
pub struct MarketBenchRow {
    pub orders: usize,
    pub mechanism: String,
    pub median_ms: f64,
    pub trades: usize,
    pub volume_kwh: f64,
    /// welfare / optimal welfare.
    pub efficiency: Option<f64>,
    /// pymarket's time to clear the same orders (Huang only), where it ran.
    pub pymarket_ms: Option<f64>,
    /// pymarket time / ours.
    pub speedup_vs_pymarket: Option<f64>,
    /// Why pymarket has no time here, if it has none.
    pub pymarket_note: Option<String>,
}

/// A deterministic order set: alternating sides at random, 0.1-5 kWh in whole Wh, prices
/// 0.05-0.40 tokens/kWh to the base unit (so large sets have many equal prices).
pub fn orders(n: usize, seed: u64) -> Vec<Order> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|i| {
            let side = if next() % 2 == 0 {
                Side::Bid
            } else {
                Side::Ask
            };
            let energy_mwh = (100 + next() % 4_901) * 1_000;
            let base = 50_000 + next() % 350_001;
            // Buyers bid a little higher on average than sellers ask, so about half of the energy trades.
            let price_per_kwh = if side == Side::Bid {
                base + 40_000
            } else {
                base
            };
            Order {
                id: i as u64,
                side,
                energy_mwh,
                price_per_kwh,
                time: i as u64,
                area: 0,
            }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs pymarket's Huang auction on `orders` in a child process; returns its clearing time.
fn pymarket_time(
    python: &Path,
    orders: &[Order],
    timeout: Duration,
) -> anyhow::Result<Option<Duration>> {
    let script = crate::repo_path("scripts/interop/pymarket_peer.py");
    let file = tempfile::NamedTempFile::new()?;
    let json: Vec<serde_json::Value> = orders
        .iter()
        .map(|o| {
            serde_json::json!({
                "id": o.id,
                "side": if o.side == Side::Bid { "bid" } else { "ask" },
                "energy": o.energy_mwh,
                "price": o.price_per_kwh,
            })
        })
        .collect();
    serde_json::to_writer(std::io::BufWriter::new(file.as_file()), &json)?;
    let mut child = Command::new(python)
        .arg(&script)
        .arg("bench")
        .arg(file.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("pymarket peer failed on {} orders", orders.len());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let secs = v["clear_seconds"]
        .as_f64()
        .context("pymarket peer printed no time")?;
    Ok(Some(Duration::from_secs_f64(secs)))
}

/// Runs the benchmark; `progress` gets one line per measurement.
pub fn run(
    opts: &MarketBenchOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<MarketBenchRow>> {
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        let set = orders(n, 0x5eed ^ n as u64);
        let areas = Areas::flat();
        let mut pymarket: Option<(Option<f64>, Option<String>)> = None;
        for &mechanism in &opts.mechanisms {
            let tariff = (mechanism == Mechanism::Community).then_some(gridmesh_market::Tariff {
                retail_per_kwh: 300_000,
                feed_in_per_kwh: 80_000,
            });
            let mut times = Vec::new();
            let mut result = None;
            for _ in 0..opts.repeat.max(1) {
                let start = Instant::now();
                let c = clear(&set, &areas, mechanism, tariff)?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
                result = Some(c);
            }
            let c = result.expect("ran at least once");
            let ms = median(times);
            let (py_ms, note) = if mechanism == Mechanism::Huang {
                pymarket
                    .get_or_insert_with(|| match &opts.python {
                        None => (None, Some("no python with pymarket".to_string())),
                        Some(_) if n > opts.pymarket_max => (
                            None,
                            Some(format!("not run above {} orders", opts.pymarket_max)),
                        ),
                        Some(py) => match pymarket_time(py, &set, opts.pymarket_timeout) {
                            Ok(Some(d)) => (Some(d.as_secs_f64() * 1e3), None),
                            Ok(None) => (
                                None,
                                Some(format!(
                                    "did not finish in {} s",
                                    opts.pymarket_timeout.as_secs()
                                )),
                            ),
                            Err(e) => (None, Some(format!("{e:#}"))),
                        },
                    })
                    .clone()
            } else {
                (None, None)
            };
            let row = MarketBenchRow {
                orders: n,
                mechanism: mechanism.name().to_string(),
                median_ms: ms,
                trades: c.trades.len(),
                volume_kwh: c.volume_mwh as f64 / 1e6,
                efficiency: (c.optimal_welfare > 0)
                    .then(|| c.welfare as f64 / c.optimal_welfare as f64),
                speedup_vs_pymarket: py_ms.map(|p| p / ms.max(1e-9)),
                pymarket_ms: py_ms,
                pymarket_note: note,
            };
            progress(&row.to_string());
            rows.push(row);
        }
    }
    Ok(rows)
}

impl std::fmt::Display for MarketBenchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9} orders  {:<13} {:>10.2} ms  {:>8} trades  efficiency {}",
            self.orders,
            self.mechanism,
            self.median_ms,
            self.trades,
            self.efficiency
                .map_or("-".to_string(), |e| format!("{:.1}%", e * 100.0))
        )?;
        match (self.pymarket_ms, &self.pymarket_note) {
            (Some(p), _) => write!(
                f,
                "  | pymarket {:.1} ms: {:.0}x faster",
                p,
                self.speedup_vs_pymarket.unwrap_or(0.0)
            ),
            (None, Some(n)) => write!(f, "  | pymarket: {n}"),
            _ => Ok(()),
        }
    }
}
