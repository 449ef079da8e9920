//! The forecasting baselines on the reference data: a PV array under the Potsdam test reference
//! year, and a household on the BDEW H25 profile. Prints the scores by horizon.

use gridmesh_agent::data::{
    household_load_kw, parse_bdew, parse_try, pv_power_kw, PvArray, REFERENCE_H25, REFERENCE_TRY,
};
use gridmesh_agent::eval::evaluate;
use gridmesh_agent::forecast::{Context, Forecaster, Persistence, SeasonalNaive, SmartPersistence};

#[test]
fn pv_yield_is_plausible_and_smart_persistence_beats_persistence_within_hours() {
    let text = REFERENCE_TRY;
    let weather = parse_try(text).unwrap();
    let (pv, clear) = pv_power_kw(&weather, &PvArray::potsdam(5.0));
    let yield_kwh_per_kwp = pv.iter().sum::<f64>() / 4.0 / 5.0;
    eprintln!("PV yield {yield_kwh_per_kwp:.0} kWh/kWp");
    assert!(
        (850.0..1_150.0).contains(&yield_kwh_per_kwp),
        "{yield_kwh_per_kwp}"
    );
    assert!(
        pv.iter().all(|p| *p <= 5.0 * 1.1),
        "never far above the rating"
    );
    assert!(
        pv.iter().zip(&clear).all(|(p, c)| *c > 0.0 || *p < 0.5),
        "no sun, little power"
    );
    let ctx = Context {
        clear_sky_kw: Some(&clear),
    };
    let fs: [&dyn Forecaster; 3] = [&Persistence, &SeasonalNaive, &SmartPersistence];
    let scores = evaluate(&pv, &fs, &ctx, 14 * 96, pv.len(), 4);
    for s in &scores {
        eprintln!(
            "{:<18} MAE {:.3} RMSE {:.3} kW",
            s.forecaster, s.mae_kw, s.rmse_kw
        );
        for b in &s.bands {
            eprintln!(
                "    {:<8} MAE {:.3} RMSE {:.3} skill {:?}",
                b.band, b.mae_kw, b.rmse_kw, b.skill
            );
        }
    }
    let smart = &scores[2];
    assert!(smart.bands[0].skill.unwrap() > 0.2, "{smart:?}");
}

#[test]
fn household_load_has_its_profile_energy_and_baselines_are_scored() {
    let text = REFERENCE_H25;
    let profile = parse_bdew(text).unwrap();
    let load = household_load_kw(&profile, 3_500.0, 42);
    let kwh = load.iter().sum::<f64>() / 4.0;
    eprintln!("household load {kwh:.0} kWh a year");
    assert!((3_200.0..3_800.0).contains(&kwh), "{kwh}");
    let ctx = Context { clear_sky_kw: None };
    let fs: [&dyn Forecaster; 2] = [&Persistence, &SeasonalNaive];
    let scores = evaluate(&load, &fs, &ctx, 14 * 96, load.len(), 4);
    for s in &scores {
        eprintln!(
            "{:<18} MAE {:.3} RMSE {:.3} kW skill {:?}",
            s.forecaster, s.mae_kw, s.rmse_kw, s.skill
        );
    }
    assert!(scores[1].rmse_kw > 0.0);
}
