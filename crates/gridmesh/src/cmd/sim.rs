//! `gridmesh sim`: simulate a community from a scenario file.

use anyhow::Context;

#[derive(clap::Args)]
pub(crate) struct SimArgs {
    /// The scenario (TOML; see examples/scenarios/).
    scenario: std::path::PathBuf,
    /// Where the report goes (created if missing).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Override a scenario value, e.g. `--set battery.share=0.8` (repeat).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run once per value of one key: `battery.share=0,0.5,1` or `battery.share=0..1:0.25`.
    #[arg(long, value_name = "KEY=VALUES")]
    sweep: Option<String>,
    /// Print the community KPIs as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(a: SimArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.scenario)
        .with_context(|| format!("reading the scenario {}", a.scenario.display()))?;
    let base = a
        .scenario
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let context = || format!("scenario {}", a.scenario.display());
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} slots, {per_sec}, eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        )
    };
    if let Some(spec) = &a.sweep {
        let (key, values) = gridmesh_sim::scenario::sweep_values(spec).with_context(context)?;
        let runs = gridmesh_sim::sweep(
            &text,
            &base,
            &a.set,
            &key,
            &values,
            &a.out,
            &mut |run, runs, done, total| {
                if done == 1 {
                    bar.reset();
                    bar.set_length(total as u64);
                    bar.set_prefix(format!("{key}={} ({}/{runs})", values[run], run + 1));
                }
                bar.set_position(done as u64);
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(context)?;
        bar.finish_and_clear();
        eprintln!(
            "{:>16} {:>16} {:>16} {:>14} {:>14}",
            key, "self-sufficiency", "self-consumption", "mean bill", "mean savings"
        );
        for r in &runs {
            let c = &r.outcome.community;
            eprintln!(
                "{:>16} {:>15.1}% {:>15.1}% {:>14.2} {:>14.2}",
                r.value,
                c.self_sufficiency * 100.0,
                c.self_consumption.unwrap_or(0.0) * 100.0,
                c.mean_bill,
                c.mean_savings
            );
        }
        eprintln!("summary: {}", a.out.join("sweep.html").display());
        if a.json {
            let rows: Vec<_> = runs
                .iter()
                .map(|r| serde_json::json!({"value": r.value, "community": r.outcome.community, "ledger": r.outcome.ledger, "devices": r.outcome.devices}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        return Ok(());
    }
    // A bad --set is the command line's, not the file's.
    let scenario = gridmesh_sim::Scenario::from_toml(&text, &a.set).map_err(|e| match e {
        gridmesh_sim::scenario::ScenarioError::Override(..) => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(context()),
    })?;
    bar.set_prefix(scenario.name.clone());
    let outcome = gridmesh_sim::run(&scenario, &base, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(context)?;
    bar.finish_and_clear();
    gridmesh_sim::report::write_run(&outcome, &a.out)
        .with_context(|| format!("writing the report into {}", a.out.display()))?;
    eprint!("{}", gridmesh_sim::report::summary(&outcome));
    eprintln!("report: {}", a.out.join("report.html").display());
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "scenario": outcome.scenario,
                "seed": outcome.seed,
                "community": outcome.community,
                "ledger": outcome.ledger,
                "devices": outcome.devices,
                "run_seconds": outcome.run_seconds,
            }))?
        );
    }
    Ok(())
}
