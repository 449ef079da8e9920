//! `gridmesh bench agents`: home schedules per second.
//!
//! Each home is `gridmesh_agent::schedule::example_home(seed)` (96 slots: load, PV, prices, a
//! battery, an EV, a deferrable load), planned from scratch (LP, and a MILP where the relaxation
//! goes both ways), alone and with its bid and ask priced both ways, side by side. One home
//! alone, then `homes` homes split over the machine's cores, as a community's agents would plan
//! one slot ahead.

use gridmesh_agent::schedule::{example_home, Plan};
use gridmesh_agent::strategy::Optimising;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct AgentBenchRow {
    /// What each home does: `plan`; `plan + price by re-planning` (the plan and its bid and ask
    /// from two more programs, as a re-plan did before issue 22); `plan + price from the
    /// optimum` (the two solved again from the plan's optimum, as a re-plan does now).
    pub work: &'static str,
    pub homes: usize,
    pub threads: usize,
    pub seconds: f64,
    pub ms_per_home: f64,
    pub milp_homes: usize,
    pub fallbacks: usize,
}

impl std::fmt::Display for AgentBenchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<34} {:>6} homes on {} thread(s): {:>8.3} s, {:>7.2} ms per home ({} needed binaries, {} fell back)",
            self.work, self.homes, self.threads, self.seconds, self.ms_per_home, self.milp_homes, self.fallbacks
        )
    }
}

/// What a home's re-plan does.
#[derive(Clone, Copy)]
enum Work {
    Plan,
    PriceByReplanning,
    PriceFromOptimum,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Plan => "plan",
            Work::PriceByReplanning => "plan + price by re-planning",
            Work::PriceFromOptimum => "plan + price from the optimum",
        }
    }
}

fn plan_range(seeds: std::ops::Range<u64>, work: Work) -> (usize, usize) {
    let (mut milp, mut fallback) = (0, 0);
    for seed in seeds {
        let agent = Optimising {
            problem: example_home(seed),
        };
        let plan = match work {
            Work::Plan => agent.problem.plan(),
            Work::PriceByReplanning => {
                let plan = agent.problem.plan();
                if let Plan::Optimal(s) = &plan {
                    std::hint::black_box(agent.marginal_values_from(s.cost));
                }
                plan
            }
            Work::PriceFromOptimum => {
                let (plan, values) = agent.plan_and_values();
                std::hint::black_box(values);
                plan
            }
        };
        match plan {
            Plan::Optimal(s) => milp += usize::from(s.milp),
            Plan::Fallback { .. } => fallback += 1,
        }
    }
    (milp, fallback)
}

/// For each kind of work: one home (the median of `repeat`), then `homes` homes over all cores.
pub fn run(homes: usize, repeat: usize) -> Vec<AgentBenchRow> {
    let mut rows = Vec::new();
    for work in [Work::Plan, Work::PriceByReplanning, Work::PriceFromOptimum] {
        let mut times: Vec<f64> = (0..repeat.max(1))
            .map(|i| {
                let t = Instant::now();
                plan_range(i as u64 + 1..i as u64 + 2, work);
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let one = times[times.len() / 2];
        rows.push(AgentBenchRow {
            work: work.name(),
            homes: 1,
            threads: 1,
            seconds: one,
            ms_per_home: one * 1e3,
            milp_homes: 0,
            fallbacks: 0,
        });
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let t = Instant::now();
        let chunk = homes.div_ceil(threads) as u64;
        let results: Vec<(usize, usize)> = std::thread::scope(|s| {
            (0..threads as u64)
                .map(|k| {
                    let from = 1 + k * chunk;
                    let to = (from + chunk).min(homes as u64 + 1);
                    s.spawn(move || plan_range(from..to, work))
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().expect("planner thread"))
                .collect()
        });
        let secs = t.elapsed().as_secs_f64();
        rows.push(AgentBenchRow {
            work: work.name(),
            homes,
            threads,
            seconds: secs,
            ms_per_home: secs * 1e3 / homes as f64,
            milp_homes: results.iter().map(|r| r.0).sum(),
            fallbacks: results.iter().map(|r| r.1).sum(),
        });
    }
    rows
}

/// `gridmesh bench community`: the agent study of `gridmesh_agent::study` on the reference year
/// that ships with the agent crate (DWD TRY Potsdam, BDEW H25), every standard scenario.
pub fn community_study(
    cfg: &gridmesh_agent::study::StudyConfig,
) -> anyhow::Result<Vec<gridmesh_agent::study::ScenarioResult>> {
    use gridmesh_agent::study;
    cfg.check()?;
    let weather = gridmesh_agent::data::parse_try(gridmesh_agent::data::REFERENCE_TRY)?;
    let profile = gridmesh_agent::data::parse_bdew(gridmesh_agent::data::REFERENCE_H25)?;
    let community = study::community(cfg, &weather, &profile);
    Ok(study::compare(
        cfg,
        &community,
        &study::Scenario::standard(cfg.homes),
        |r| {
            eprintln!(
                "{}: mean bill {:.2} tokens, transformer peak {:.1} kW ({:.0} s)",
                r.name, r.mean_bill, r.transformer_peak_kw, r.seconds
            )
        },
    ))
}

/// One solver's time on the home programs that need the simplex, side by side.
#[derive(Clone, Debug, Serialize)]
pub struct SolverBenchRow {
    pub solver: &'static str,
    /// `optimum`, or `optimum + pricing re-solve` (the first slot's import fixed, from the
    /// optimum, as a re-plan prices its bid and ask).
    pub work: &'static str,
    pub programs: usize,
    pub rows: usize,
    pub columns: usize,
    /// Median over three passes, each over every program (HiGHS: the sum of each program's
    /// fastest of three `run()` calls, in its Python interface).
    pub us_per_program: f64,
    /// Against the fastest solver of the run at the same work.
    pub ratio: f64,
}

impl std::fmt::Display for SolverBenchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<30} {:<30} {:>4} programs of {} rows x {} columns: {:>8.1} us per program ({:.2}x the fastest)",
            self.solver, self.work, self.programs, self.rows, self.columns, self.us_per_program, self.ratio
        )
    }
}

/// The programs the simulator leaves to the simplex (a battery and a heat pump for the house
/// and the hot-water tank, planned by the quarter hour for an hour and hourly beyond, 27 steps),
/// solved on one core by the agent's dual simplex and by microlp, the optimum alone and with a
/// pricing re-solve; and by HiGHS through `python` (the interop venv's), the optimum alone,
/// where one is given.
pub fn solvers(
    programs: usize,
    python: Option<&std::path::Path>,
) -> anyhow::Result<Vec<SolverBenchRow>> {
    use gridmesh_agent::schedule::Resolution;
    let home = |seed: u64| {
        let mut h = example_home(seed);
        h.thermal = example_home(3 * seed).thermal;
        h.ev = None;
        h.deferrable.clear();
        h
    };
    let stepped: Vec<_> = (1..=programs.max(1) as u64)
        .map(|seed| {
            let mut h = home(seed);
            h.resolution = Some(Resolution {
                fine_slots: 4,
                step_slots: 4,
            });
            h.lp()
        })
        .collect();
    // The same homes every slot a step (96), as the live home and the agent study plan them.
    let fine: Vec<_> = (1..=(programs / 4).max(1) as u64)
        .map(|seed| home(seed).lp())
        .collect();
    let mut rows = solvers_on(&stepped, python)?;
    rows.extend(solvers_on(&fine, python)?);
    Ok(rows)
}

fn solvers_on(
    lps: &[gridmesh_agent::lp::Lp],
    python: Option<&std::path::Path>,
) -> anyhow::Result<Vec<SolverBenchRow>> {
    use anyhow::Context;
    use gridmesh_agent::lp::Lp;
    type Solve = fn(&Lp) -> f64;
    let optimum: [(&'static str, Solve); 2] = [
        ("dual simplex (gridmesh-agent)", |lp| {
            lp.solve_warm().expect("feasible").x[0]
        }),
        ("microlp 0.6", |lp| {
            lp.solve_microlp().expect("feasible").x[0]
        }),
    ];
    let priced: [(&'static str, Solve); 2] = [
        ("dual simplex (gridmesh-agent)", |lp| {
            let s = lp.solve_warm().expect("feasible");
            s.with_fixed(lp, 0, lp.lower[0]).map_or(0.0, |s| s.x[0])
        }),
        ("microlp 0.6", |lp| {
            let s = lp.solve_microlp().expect("feasible");
            s.with_fixed(lp, 0, lp.lower[0]).map_or(0.0, |s| s.x[0])
        }),
    ];
    let row = |solver, work, us_per_program| SolverBenchRow {
        solver,
        work,
        programs: lps.len(),
        rows: lps[0].rows.len(),
        columns: lps[0].names.len(),
        us_per_program,
        ratio: 0.0,
    };
    let timed = |solve: Solve| {
        let mut times: Vec<f64> = (0..3)
            .map(|_| {
                let t = Instant::now();
                for lp in lps {
                    std::hint::black_box(solve(lp));
                }
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[1] * 1e6 / lps.len() as f64
    };
    let mut out = Vec::new();
    let mut group: Vec<SolverBenchRow> = optimum
        .iter()
        .map(|(name, solve)| row(name, "optimum", timed(*solve)))
        .collect();
    if let Some(python) = python {
        let dir = tempfile::tempdir()?;
        let files: Vec<std::path::PathBuf> = lps
            .iter()
            .enumerate()
            .map(|(k, lp)| {
                let file = dir.path().join(format!("home{k}.mps"));
                std::fs::write(&file, lp.to_mps(&format!("home{k}")))?;
                Ok(file)
            })
            .collect::<anyhow::Result<_>>()?;
        let args = std::iter::once(std::ffi::OsString::from("--time"))
            .chain(files.iter().map(|f| f.clone().into_os_string()));
        let solved = crate::run_peer(python, "scripts/interop/highs_peer.py", args)?;
        let solved = solved.as_array().context("highs_peer.py printed no list")?;
        let total: f64 = solved
            .iter()
            .map(|r| r["run_s"].as_f64().context("highs_peer.py gave no run_s"))
            .sum::<anyhow::Result<f64>>()?;
        group.push(row(
            "HiGHS (highspy)",
            "optimum",
            total * 1e6 / lps.len() as f64,
        ));
    }
    for work in [
        group,
        priced
            .iter()
            .map(|(name, solve)| row(name, "optimum + pricing re-solve", timed(*solve)))
            .collect(),
    ] {
        let fastest = work
            .iter()
            .map(|r| r.us_per_program)
            .fold(f64::INFINITY, f64::min);
        out.extend(work.into_iter().map(|mut r| {
            r.ratio = r.us_per_program / fastest;
            r
        }));
    }
    Ok(out)
}
