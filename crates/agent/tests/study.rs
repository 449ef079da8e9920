//! A small community over a few days of May under every agent: optimising agents lower their
//! bills against utility-only homes, the coordinator keeps the transformer peak down, energy
//! and money add up, and runs are reproducible.

use gridmesh_agent::data::{parse_bdew, parse_try, REFERENCE_H25, REFERENCE_TRY};
use gridmesh_agent::study::{community, compare, run, table, AgentKind, Scenario, StudyConfig};

#[test]
fn optimising_agents_save_and_the_coordinator_keeps_the_transformer_within_its_rating() {
    let (weather, h25) = (REFERENCE_TRY, REFERENCE_H25);
    let weather = parse_try(weather).unwrap();
    let profile = parse_bdew(h25).unwrap();
    let cfg = StudyConfig {
        homes: 18,
        days: 3,
        transformer_kw: 40.0,
        ..StudyConfig::default()
    };
    cfg.check().unwrap();
    let c = community(&cfg, &weather, &profile);
    let scenarios = Scenario::standard(cfg.homes);
    let results = compare(&cfg, &c, &scenarios, |_| {});
    eprintln!("{}", table(&cfg, &results));
    for r in &results {
        eprintln!(
            "{:<26} bill {:>7.2}  self-sufficiency {:>5.1} %  peak {:>6.1} kW  over {:>3}  cycles {:>4.2}  p2p {:>6.1} kWh at {:.3}  ev unmet {:.2}  fallbacks {} unfit {}  {:.1} s",
            r.name, r.mean_bill, r.self_sufficiency * 100.0, r.transformer_peak_kw, r.slots_over_rating,
            r.battery_cycles, r.p2p_kwh, r.mean_p2p_price, r.ev_unmet_kwh, r.fallbacks, r.unfit, r.seconds
        );
    }
    let by_name = |n: &str| results.iter().find(|r| r.name == n).unwrap();
    let (utility, zi, optimising, coordinated) = (
        by_name("utility only"),
        by_name("zero intelligence"),
        by_name("optimising"),
        by_name("optimising, coordinated"),
    );
    // Trading with neighbours at prices between feed-in and retail lowers the community's bill;
    // planning lowers it further.
    assert!(utility.p2p_kwh == 0.0);
    assert!(
        zi.mean_bill < utility.mean_bill,
        "{} vs {}",
        zi.mean_bill,
        utility.mean_bill
    );
    assert!(
        optimising.mean_bill < zi.mean_bill,
        "{} vs {}",
        optimising.mean_bill,
        zi.mean_bill
    );
    // Homes with a battery or an EV save against the same home without an agent.
    let flexible: Vec<usize> = (0..c.homes.len())
        .filter(|&i| c.homes[i].battery.is_some() || !c.homes[i].sessions.is_empty())
        .collect();
    let saving: Vec<f64> = flexible
        .iter()
        .map(|&i| utility.bills[i] - optimising.bills[i])
        .collect();
    eprintln!("savings of flexible homes: {saving:.2?}");
    assert!(saving.iter().sum::<f64>() > 0.0);
    assert!(saving.iter().filter(|s| **s > 0.0).count() * 5 >= flexible.len() * 4);
    // Every EV is charged by its departure when planned.
    assert!(optimising.ev_unmet_kwh < 1e-6 && coordinated.ev_unmet_kwh < 1e-6);
    assert_eq!(optimising.fallbacks, 0);
    // Cheap night energy herds the planned EVs; the coordinator spreads them.
    assert!(optimising.transformer_peak_kw > cfg.transformer_kw * 1.5);
    assert!(coordinated.transformer_peak_kw < cfg.transformer_kw * 1.05);
    assert!(coordinated.slots_over_rating * 4 < optimising.slots_over_rating.max(1));
    // Planned EVs leave the evening peak (they charge at night); plug-in charging makes it.
    assert!(optimising.evening_peak_kw < utility.evening_peak_kw);
    // In the mix, the optimising third saves more against its utility-only bills than the
    // zero-intelligence third does against theirs.
    let mixed = by_name("mixed");
    let group = |kind| mixed.groups.iter().find(|g| g.agent == kind).unwrap();
    assert_eq!(group(AgentKind::Optimising).homes, 6);
    let saving = |kind| group(kind).mean_saving.unwrap();
    assert!(saving(AgentKind::Optimising) > saving(AgentKind::ZeroIntelligence));
    assert!(saving(AgentKind::ZeroIntelligence) > 0.0);
    // Reproducible.
    let again = run(&cfg, &c, &scenarios[2]);
    assert_eq!(again.bills, mixed.bills);
}
