//! The gridmesh simulator: a whole community through the real stack on a simulated clock.
//!
//! A [`scenario::Scenario`] (TOML) describes the feeder, the homes and their devices, load and
//! weather, tariff, market, agents and outages. [`run`] draws the community, builds the feeder,
//! and drives the ledger's own block building (orders, clearing at gate closure, readings,
//! settlement; [`ledger`]) slot by slot while the homes' devices and agents act and the feeder's
//! power flow is solved ([`engine`]). [`kpi`] holds the indicators, [`report`] writes them as
//! JSON, CSV and an HTML report with plots.
//!
//! Runs are reproducible: the same scenario and seed give the same KPIs and the same final state
//! root.

pub mod community;
pub mod data;
pub mod devices;
pub mod engine;
pub mod feeder;
pub mod flow;
pub mod island;
pub mod kpi;
pub mod ledger;
pub mod report;
pub mod scenario;

pub use engine::SimError;
pub use kpi::Outcome;
pub use scenario::Scenario;

/// Reads the scenario's data, draws its community and feeder, and runs it.
pub fn run(
    s: &Scenario,
    base_dir: &std::path::Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Outcome, SimError> {
    let inputs = data::load_scenario(s, base_dir)?;
    let c = community::build(s, &inputs);
    let feeder = feeder::build(&s.feeder, &c.buses, base_dir)?;
    engine::run(s, &c, &feeder, progress)
}

/// One run of a sweep: the swept value and what it gave.
pub struct SweepRun {
    pub value: String,
    pub outcome: Outcome,
}

/// Runs the scenario `text` once per value of `key` (after `overrides`), each into
/// `out/<key>=<value>/`, and writes the summary (`sweep.csv`, `sweep.html`) into `out`.
/// `progress(run, runs, done, total)` hears of every slot.
pub fn sweep(
    text: &str,
    base_dir: &std::path::Path,
    overrides: &[String],
    key: &str,
    values: &[String],
    out: &std::path::Path,
    progress: &mut dyn FnMut(usize, usize, usize, usize),
) -> Result<Vec<SweepRun>, Box<dyn std::error::Error + Send + Sync>> {
    let mut runs = Vec::new();
    // Check every run's scenario before the first starts.
    let scenarios: Vec<Scenario> = values
        .iter()
        .map(|v| {
            let mut o = overrides.to_vec();
            o.push(format!("{key}={v}"));
            Scenario::from_toml(text, &o)
        })
        .collect::<Result<_, _>>()?;
    for (k, (s, v)) in scenarios.iter().zip(values).enumerate() {
        let outcome = run(s, base_dir, &mut |d, t| progress(k, values.len(), d, t))?;
        report::write_run(&outcome, &out.join(format!("{key}={v}")))?;
        runs.push(SweepRun {
            value: v.clone(),
            outcome,
        });
    }
    report::write_sweep(key, &runs, out)?;
    Ok(runs)
}
