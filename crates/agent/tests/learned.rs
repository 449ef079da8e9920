//! The learned forecaster against the baselines on held-out days of the reference year (every
//! fifth day; no held-out value is ever a training label): it must beat persistence, for PV and
//! for a household's load.

use gridmesh_agent::data::{
    day_types, household_load_kw, parse_bdew, parse_try, pv_power_kw, weather_per_slot, PvArray,
    REFERENCE_H25, REFERENCE_TRY,
};
use gridmesh_agent::eval::{evaluate_at, Score};
use gridmesh_agent::forecast::{Context, Forecaster, Persistence, SeasonalNaive, SmartPersistence};
use gridmesh_agent::learned::{Exogenous, Learned, Target, TrainOptions};
use gridmesh_agent::SLOTS_PER_DAY;

fn held_out(slot: usize) -> bool {
    (slot / SLOTS_PER_DAY) % 5 == 2
}

fn print(scores: &[Score]) {
    for s in scores {
        eprintln!(
            "{:<18} MAE {:.3} RMSE {:.3} kW skill {:+.3}",
            s.forecaster,
            s.mae_kw,
            s.rmse_kw,
            s.skill.unwrap_or(0.0)
        );
        for b in &s.bands {
            eprintln!(
                "    {:<8} MAE {:.3} RMSE {:.3} skill {:+.3}",
                b.band,
                b.mae_kw,
                b.rmse_kw,
                b.skill.unwrap_or(0.0)
            );
        }
    }
}

/// Origins: the held-out days at 00:00, 06:00, 12:00 and 18:00 (a day ahead from each), after two
/// weeks of history.
fn test_origins(len: usize) -> Vec<usize> {
    (14 * SLOTS_PER_DAY..len - SLOTS_PER_DAY)
        .step_by(24)
        .filter(|o| held_out(*o))
        .collect()
}

fn train_origins(len: usize) -> impl Iterator<Item = usize> {
    (14 * SLOTS_PER_DAY..len - SLOTS_PER_DAY)
        .step_by(24)
        .filter(|o| !held_out(*o))
}

/// Lighter than the defaults, so the test stays within seconds (BENCHMARKS.md has the full run).
const OPTIONS: TrainOptions = TrainOptions {
    horizon_step: 6,
    trees: 80,
    max_depth: 5,
};

#[test]
fn boosted_trees_beat_persistence_on_held_out_days() {
    let (weather_text, load_text) = (REFERENCE_TRY, REFERENCE_H25);
    let weather = parse_try(weather_text).unwrap();
    let (cloud, temperature) = weather_per_slot(&weather);
    let (pv, clear) = pv_power_kw(&weather, &PvArray::potsdam(5.0));
    let exogenous = Exogenous {
        cloud_octas: cloud,
        temperature_c: temperature,
        day_type: day_types(),
        clear_sky_kw: Some(clear.clone()),
    };
    let t0 = std::time::Instant::now();
    let model = Learned::train(
        Target::Pv,
        &pv,
        exogenous.clone(),
        train_origins(pv.len()),
        held_out,
        OPTIONS,
    )
    .unwrap();
    eprintln!(
        "PV: trained on {} rows in {:.1} s",
        model.training_rows,
        t0.elapsed().as_secs_f64()
    );
    let ctx = Context {
        clear_sky_kw: Some(&clear),
    };
    let fs: [&dyn Forecaster; 4] = [&Persistence, &SeasonalNaive, &SmartPersistence, &model];
    let scores = evaluate_at(&pv, &fs, &ctx, &test_origins(pv.len()));
    print(&scores);
    let learned = &scores[3];
    assert!(learned.skill.unwrap() > 0.1, "PV: {learned:?}");
    for b in &learned.bands {
        assert!(b.skill.unwrap() > 0.0, "PV {}: {b:?}", b.band);
    }

    let profile = parse_bdew(load_text).unwrap();
    let load = household_load_kw(&profile, 3_500.0, 42);
    let exogenous = Exogenous {
        clear_sky_kw: None,
        ..exogenous
    };
    let t0 = std::time::Instant::now();
    let model = Learned::train(
        Target::Load,
        &load,
        exogenous,
        train_origins(load.len()),
        held_out,
        OPTIONS,
    )
    .unwrap();
    eprintln!(
        "load: trained on {} rows in {:.1} s",
        model.training_rows,
        t0.elapsed().as_secs_f64()
    );
    let ctx = Context { clear_sky_kw: None };
    let fs: [&dyn Forecaster; 3] = [&Persistence, &SeasonalNaive, &model];
    let scores = evaluate_at(&load, &fs, &ctx, &test_origins(load.len()));
    print(&scores);
    assert!(scores[2].skill.unwrap() > 0.1, "load: {:?}", scores[2]);
}
