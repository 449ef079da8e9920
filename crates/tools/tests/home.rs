//! A member's home on a node running the simulated community: sign-in by a signed challenge,
//! the home's flows for its owner, refusals for everyone else, and grants.

use std::sync::Arc;

use gridmesh_ledger::Keypair;
use gridmesh_tools::demo_community::{self, DemoOptions};

fn post(url: &str, body: serde_json::Value) -> Result<serde_json::Value, (u16, serde_json::Value)> {
    match ureq::post(url).send_json(body) {
        Ok(r) => Ok(r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => Err((code, r.into_json().unwrap())),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
) -> Result<serde_json::Value, (u16, serde_json::Value)> {
    let mut req = ureq::request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => Ok(r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => Err((code, r.into_json().unwrap())),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// Signs in as `key`: challenge, signature, token.
fn sign_in(api: &str, key: &Keypair) -> String {
    gridmesh_client::client::Client::new(api)
        .sign_in(key)
        .unwrap()
}

#[test]
fn a_home_is_for_its_owner_and_whom_the_owner_grants_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = DemoOptions {
        day_seconds: 0.0,
        overrides: vec!["homes.count=20".into()],
        ..Default::default()
    };
    let (node, run) = rt
        .block_on(demo_community::start(opts, Arc::new(|_| {})))
        .unwrap();
    let api = run.api.clone();
    let (ada, ben) = (
        gridmesh_sim::ledger::member_key(1, 0),
        gridmesh_sim::ledger::member_key(1, 1),
    );
    let home = format!("{api}/v1/homes/{}?slots=200", ada.address());

    // Nobody signed in, a forged signature, a replayed challenge: refused.
    assert_eq!(call("GET", &home, None).unwrap_err().0, 401);
    assert_eq!(call("GET", &home, Some("not-a-token")).unwrap_err().0, 401);
    let c = post(
        &format!("{api}/v1/auth/challenge"),
        serde_json::json!({ "address": ada.address().to_string() }),
    )
    .unwrap();
    let message = hex::decode(c["message"].as_str().unwrap()).unwrap();
    let forged = post(
        &format!("{api}/v1/auth/session"),
        serde_json::json!({
            "address": ada.address().to_string(),
            "challenge": c["challenge"],
            "signature": hex::encode(ben.sign(&message)),
        }),
    )
    .unwrap_err();
    assert_eq!(
        (forged.0, forged.1["error"].as_str()),
        (401, Some("bad_signature"))
    );
    // The forged attempt used nothing up (issue 19): Ada signs in with the same challenge, once.
    let signed = serde_json::json!({
        "address": ada.address().to_string(),
        "challenge": c["challenge"],
        "signature": hex::encode(ada.sign(&message)),
    });
    post(&format!("{api}/v1/auth/session"), signed.clone()).expect("signed in");
    let replay = post(&format!("{api}/v1/auth/session"), signed).unwrap_err();
    assert_eq!(
        replay.1["error"], "bad_challenge",
        "a challenge is used once"
    );
    let bad = post(
        &format!("{api}/v1/auth/challenge"),
        serde_json::json!({ "address": "xyz" }),
    )
    .unwrap_err();
    assert_eq!(bad.0, 400);

    // The owner reads the home: its meter over the day, as the simulator metered it.
    let ada_token = sign_in(&api, &ada);
    let view = call("GET", &home, Some(&ada_token)).unwrap();
    let n = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let t = &view["totals"];
    let sim_home = &run.outcome.homes[0];
    assert!(
        (n(&t["import_kwh"]) - sim_home.import_kwh).abs() < 0.05,
        "{} against {}",
        t["import_kwh"],
        sim_home.import_kwh
    );
    assert!((n(&t["export_kwh"]) - sim_home.export_kwh).abs() < 0.05);
    let rows = view["slots"].as_array().unwrap();
    assert_eq!(rows.len(), 96, "one row per slot of the day");
    let summed: f64 = rows.iter().map(|r| n(&r["import_kwh"])).sum();
    assert!((summed - n(&t["import_kwh"])).abs() < 1e-6);
    assert!(
        (n(&t["baseline_bill"]) - n(&t["bill"]) - n(&t["savings"])).abs() < 1e-6,
        "savings = baseline - bill"
    );
    assert_eq!(
        view["balance"],
        call("GET", &format!("{api}/v1/accounts/{}", ada.address()), None).unwrap()["balance"]
    );

    // What the home's devices did in the last slot is the owner's, not the public feeder view's.
    assert!(
        view["live"]["load_kw"].as_f64().unwrap() >= 0.0,
        "{}",
        view["live"]
    );
    let public = ureq::get(&format!("{api}/v1/grid/feeder"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        !public.contains(&ada.address().to_string()),
        "no home in the public view"
    );

    // Ben may not, until Ada grants it; then he may, until she withdraws it.
    let ben_token = sign_in(&api, &ben);
    assert_eq!(call("GET", &home, Some(&ben_token)).unwrap_err().0, 403);
    let grant = format!("{api}/v1/homes/{}/grants/{}", ada.address(), ben.address());
    assert_eq!(
        call("PUT", &grant, Some(&ben_token)).unwrap_err().0,
        403,
        "only the owner grants"
    );
    let g = call("PUT", &grant, Some(&ada_token)).unwrap();
    assert_eq!(g["grantees"][0], ben.address().to_string());
    assert_eq!(
        call("GET", &home, Some(&ben_token)).unwrap()["address"],
        ada.address().to_string()
    );
    call("DELETE", &grant, Some(&ada_token)).unwrap();
    assert_eq!(call("GET", &home, Some(&ben_token)).unwrap_err().0, 403);
    let too_long = format!("{api}/v1/homes/{}?slots=3000", ada.address());
    assert_eq!(call("GET", &too_long, Some(&ada_token)).unwrap_err().0, 400);
    rt.block_on(node.stop()).unwrap();
}
