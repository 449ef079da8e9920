//! The dashboard end to end: a real node with a simulated community (`gridmesh demo --serve`),
//! the page in headless Chromium (Debian's, installed by `./scripts/setup`). Every page loads
//! without a console message, the numbers it shows are the API's, and screenshots of each page at
//! phone and desktop widths are written to `target/tmp/dashboard/`. The API the page uses is in the
//! node's OpenAPI document, and the answers validate against it (`scripts/interop/openapi_check.py`,
//! `jsonschema` from the test venv).

#[path = "common/cdp.rs"]
mod cdp;
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `gridmesh demo` serving after its run (the chain no longer moves); killed on drop.
struct Demo {
    child: Child,
    url: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    start_demo_with(&["--set", "homes.count=30"])
}

fn start_demo_with(args: &[&str]) -> Demo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        .args([
            "demo",
            "--day-seconds",
            "0",
            "--serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut url = None;
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if url.is_none() {
            url = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(|w| w.trim_end_matches(',').to_string());
        }
        let over = line.contains("the run is over");
        seen.push(line);
        if over {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let url = url.unwrap_or_else(|| panic!("no address in {seen:#?}"));
    Demo { child, url }
}

fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("GRIDMESH_CHROMIUM") {
        return p.into();
    }
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if let Some(found) = found {
            return found;
        }
    }
    panic!("chromium is not installed: run ./scripts/setup (or set GRIDMESH_CHROMIUM)")
}

/// Chromium headless on `url` with `args`; returns stdout and the console messages.
fn headless(chrome: &Path, url: &str, args: &[&str]) -> (String, Vec<String>) {
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=6000",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// `data-api="key">value<` pairs of a page's DOM.
fn shown(dom: &str) -> Vec<(String, String)> {
    dom.split("data-api=\"")
        .skip(1)
        .filter_map(|rest| {
            let (key, rest) = rest.split_once('"')?;
            let value = rest.split_once('>')?.1.split_once('<')?.0;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

/// A number as the page shows it (issue 24, numbers for people): `places` decimals, the digits
/// before the point grouped by three with a narrow no-break space, no minus on a zero.
fn people(x: f64, places: usize) -> String {
    let text = to_fixed(x.abs(), places);
    let (whole, part) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(w, p)| (w, Some(p)));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push('\u{202f}');
        }
        grouped.push(c);
    }
    let negative = x < 0.0 && text.chars().any(|c| ('1'..='9').contains(&c));
    format!(
        "{}{grouped}{}",
        if negative { "-" } else { "" },
        part.map_or(String::new(), |p| format!(".{p}"))
    )
}

/// `x.toFixed(places)` of JavaScript for `x ≥ 0`: the nearest, and of two the larger (Rust's
/// formatting takes the even one on an exact tie, as 0.125 to two places is).
fn to_fixed(x: f64, places: usize) -> String {
    // Exact for every value with a tie (a short binary fraction).
    let long = format!("{x:.60}");
    let (whole, frac) = long.split_once('.').unwrap();
    let mut digits: Vec<u8> = whole.bytes().chain(frac.bytes().take(places)).collect();
    if frac.as_bytes()[places] >= b'5' {
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, b'1');
                break;
            }
            i -= 1;
            if digits[i] == b'9' {
                digits[i] = b'0';
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let digits = String::from_utf8(digits).unwrap();
    let cut = digits.len() - places;
    if places == 0 {
        digits
    } else {
        format!("{}.{}", &digits[..cut], &digits[cut..])
    }
}

/// Tokens as the page rounds them: to the hundredth, whole from 100 000 up.
fn tokens(x: f64) -> String {
    people(x, if x.abs() >= 1e5 { 0 } else { 2 })
}

/// Energy as the page rounds it: to 10 Wh, whole kWh from 1 000 up.
fn kwh(x: f64) -> String {
    people(x, if x.abs() >= 1e3 { 0 } else { 2 })
}

/// A time as the page shows it: `2026-05-04 17:15 UTC`.
fn utc_text(ms: u64) -> String {
    let utc = gridmesh_sim::kpi::utc(ms / 1000);
    format!("{} UTC", utc.trim_end_matches('Z').replace('T', " "))
}

#[test]
fn numbers_are_rounded_and_grouped_for_people() {
    assert_eq!(people(979.871939, 2), "979.87");
    assert_eq!(
        tokens(1_000_000_000.0),
        "1\u{202f}000\u{202f}000\u{202f}000"
    );
    assert_eq!(tokens(12_345.678), "12\u{202f}345.68");
    assert_eq!(kwh(-0.004), "0.00");
    assert_eq!(kwh(-1234.5), "-1\u{202f}235");
    assert_eq!(people(999.996, 2), "1\u{202f}000.00");
    // Ties go up, as JavaScript's toFixed takes them.
    assert_eq!(people(0.125, 2), "0.13");
    assert_eq!(people(2.5, 0), "3");
    assert_eq!(people(0.1, 3), "0.100");
}

/// What the API says for a `data-api` key, if the key is a plain field of an API document.
fn from_api(url: &str, key: &str) -> Option<String> {
    let (doc, field) = key.split_once('.')?;
    let path = match doc {
        "status" => "/v1/status",
        "supply" => "/v1/supply",
        "grid" => "/v1/grid",
        "market" => "/v1/market",
        "history" => "/v1/market/history?slots=96",
        "feeder" => "/v1/grid/feeder",
        _ => return None,
    };
    let json = common::get_json(&format!("{url}{path}"));
    // Two figures the page derives from an API document.
    match key {
        "grid.islanded_events" => {
            let n = json["events"]
                .as_array()?
                .iter()
                .filter(|e| e["event"] == "islanded")
                .count();
            return Some(n.to_string());
        }
        "history.volume_kwh_sum" => {
            let kwh: f64 = json["rows"]
                .as_array()?
                .iter()
                .map(|r| r["volume_kwh"].as_str().unwrap().parse::<f64>().unwrap())
                .sum();
            return Some(self::kwh(kwh));
        }
        _ => {}
    }
    if doc == "feeder" {
        // Shown rounded: to as many places as the page shows, percentages as percent.
        let v = field.split('.').try_fold(&json, |j, p| j.get(p))?;
        return Some(match v.as_f64() {
            Some(x) if field.ends_with("self_sufficiency") => format!("{:.1} %", x * 100.0),
            Some(x) if v.is_u64() => format!("{x}"),
            Some(x) if field.ends_with("_pu") => people(x, 3),
            Some(x) if field.ends_with("losses_kw") => people(x, 2),
            Some(x) if field.ends_with("unbalance_pct") => people(x, 2),
            Some(x) => people(x, 1),
            None => v.as_str().unwrap_or("–").to_string(),
        });
    }
    let v = match field.strip_prefix("last.") {
        Some(f) => json["rows"].as_array()?.last()?.get(f)?.clone(),
        None => json.get(field)?.clone(),
    };
    let decimal = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<f64>().ok());
    const TOKENS: [&str; 7] = [
        "total_supply",
        "minted",
        "emission_cap",
        "community_fund",
        "device_bonds",
        "escrow",
        "escrow_balance",
    ];
    match v {
        // Times are shown as the page formats them, slots as the time their delivery starts.
        serde_json::Value::Number(n) if field.ends_with("_ms") => Some(utc_text(n.as_u64()?)),
        serde_json::Value::Number(n) if field.ends_with("_slot") => {
            Some(utc_text(n.as_u64()? * 900_000))
        }
        serde_json::Value::Null => Some("–".to_string()),
        serde_json::Value::Number(n) if field == "height" => Some(people(n.as_f64()?, 0)),
        ref s if TOKENS.contains(&field) => Some(tokens(decimal(s)?)),
        ref s if field.ends_with("price_per_kwh") => Some(people(decimal(s)?, 3)),
        ref s if field.ends_with("_kwh") => Some(kwh(decimal(s)?)),
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(if b { "yes" } else { "NO" }.to_string()),
        _ => None,
    }
}

#[test]
fn every_page_loads_cleanly_and_shows_the_apis_numbers() {
    let chrome = chromium();
    let demo = start_demo();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    for page in ["network", "market", "ledger"] {
        let url = format!("{}/#{page}", demo.url);
        let (dom, console) = headless(&chrome, &url, &["--dump-dom"]);
        assert!(console.is_empty(), "{page}: console: {console:#?}");
        assert!(
            dom.contains(&format!("data-page=\"{page}\"")),
            "{page} rendered: {dom}"
        );
        // A list handed to the page as one child prints as "[object HTMLElement],..." and raises
        // no console message (issue 24: the market's order books never showed).
        assert!(!dom.contains("[object"), "{page}: an object as text: {dom}");
        // Numbers are rounded for people: no API decimal with six places shows through (issue
        // 24: balances read "979.871939").
        let long_decimal = dom
            .split('.')
            .skip(1)
            .find(|after| after.len() >= 4 && after.bytes().take(4).all(|b| b.is_ascii_digit()));
        assert!(
            long_decimal.is_none(),
            "{page}: a number with four or more decimals: …{}",
            long_decimal
                .unwrap_or("")
                .chars()
                .take(40)
                .collect::<String>()
        );
        if page == "market" {
            assert!(
                dom.contains("/v1/charts/depth.svg?slot="),
                "the market's order book chart: {dom}"
            );
        }
        // The event stream connected under the page's CSP (connect-src 'self' only).
        assert!(
            dom.contains("class=\"up\"") && dom.contains("live · block"),
            "{page}: the live event stream: {dom}"
        );
        // Addresses are shown checksummed (`gm1…`, as the CLI prints them), the whole of each
        // on hover: every one decodes to itself (issue 24: short hex was easy to mistype).
        let addresses: Vec<&str> = dom
            .split("class=\"addr\" title=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        for a in &addresses {
            let parsed: gridmesh_types::Address =
                a.parse().unwrap_or_else(|e| panic!("{page}: {a}: {e}"));
            assert!(
                a.starts_with("gm1") && parsed.checksummed() == *a,
                "{page}: {a}"
            );
        }
        if page == "ledger" {
            assert!(
                addresses.len() >= 2,
                "the ledger's proposers and senders: {addresses:?}"
            );
        }
        let pairs = shown(&dom);
        let mut checked = 0;
        for (key, value) in &pairs {
            if let Some(want) = from_api(&demo.url, key) {
                assert_eq!(value, &want, "{page}: {key}");
                checked += 1;
            }
        }
        assert_eq!(
            checked,
            pairs.len(),
            "{page}: every figure has its API source"
        );
        assert!(checked >= 5, "{page}: only {checked} figures");
        if page == "network" {
            // The feeder is drawn as it is: the grid connection and the transformer named, the
            // 30 homes at their buses, those with rooftop PV apart (issue 24: a generic grid of
            // identical lines).
            let svg = ureq::get(&format!("{}/v1/charts/feeder.svg", demo.url))
                .call()
                .unwrap()
                .into_string()
                .unwrap();
            std::fs::write(shots.join("feeder.svg"), &svg).unwrap();
            assert!(
                svg.contains("grid connection") && svg.contains("transformer"),
                "the feeder's names"
            );
            let marks = |colour: &str| {
                svg.split("<polygon")
                    .skip(1)
                    .filter(|p| p.split('>').next().unwrap_or("").contains(colour))
                    .count()
            };
            let (pv, plain) = (marks("#E69F00"), marks("#56B4E9"));
            // One mark a home, and one of each in the legend.
            assert!(
                pv >= 2 && plain >= 2 && pv + plain == 30 + 2,
                "PV homes {pv}, others {plain}"
            );
            // The feeder's flows add up with the one sign convention the page states: the
            // exchange with the grid is what the homes draw (batteries charging, EVs) less their
            // PV, plus the losses (issue 24: the page said "+ discharging").
            let shown_kw = |k: &str| -> f64 {
                let key = format!("feeder.latest.{k}");
                pairs
                    .iter()
                    .find(|(p, _)| *p == key)
                    .unwrap()
                    .1
                    .parse()
                    .unwrap()
            };
            let drawn = shown_kw("load_kw") + shown_kw("ev_kw") + shown_kw("battery_kw")
                - shown_kw("pv_kw")
                + shown_kw("losses_kw");
            assert!(
                (shown_kw("pcc_kw") - drawn).abs() < 0.3,
                "exchange {} kW, the flows add up to {drawn} kW",
                shown_kw("pcc_kw")
            );
            let f = common::get_json(&format!("{}/v1/grid/feeder", demo.url))["latest"].clone();
            let api = |k: &str| f[k].as_f64().unwrap();
            let residual = api("pcc_kw")
                - (api("load_kw") + api("ev_kw") + api("battery_kw") - api("pv_kw")
                    + api("losses_kw")
                    - api("not_served_kw"));
            assert!(residual.abs() < 1e-6, "{f}: {residual} kW unaccounted for");
            assert!(dom.contains("Batteries (kW, + charging)"), "{dom}");
        }
        for (name, size) in [("phone", "390,844"), ("desktop", "1280,900")] {
            let file = shots.join(format!("{page}-{name}.png"));
            let _ = std::fs::remove_file(&file);
            let (_, console) = headless(
                &chrome,
                &url,
                &[
                    &format!("--window-size={size}"),
                    &format!("--screenshot={}", file.display()),
                ],
            );
            assert!(console.is_empty(), "{page} at {name}: {console:#?}");
            let png = std::fs::read(&file).expect("a screenshot");
            assert!(
                png.starts_with(b"\x89PNG") && png.len() > 10_000,
                "{file:?}"
            );
        }
    }
    // The assets are the binary's own, with a strict content security policy.
    let r = ureq::get(&format!("{}/", demo.url)).call().unwrap();
    let csp = r.header("content-security-policy").unwrap().to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(r.into_string().unwrap().contains("/dashboard/app.js"));
}

#[test]
fn an_opendss_feeder_is_drawn_on_its_map_with_each_phases_voltages() {
    let chrome = chromium();
    // The European LV feeder with a home on each of its 55 loads, at noon in June.
    let master = gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss");
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("eu-lv.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"eu-lv\"\n[homes]\ncount = 55\n[pv]\nshare = 0.8\n[feeder]\ndss = {:?}\nvmin_pu = 0.9\nvmax_pu = 1.1\n",
            master.display().to_string()
        ),
    )
    .unwrap();
    let demo = start_demo_with(&[
        "--scenario",
        scenario.to_str().unwrap(),
        "--set",
        "period.start=06-10",
    ]);
    let feeder = common::get_json(&format!("{}/v1/grid/feeder", demo.url));
    assert_eq!(feeder["available"], true, "{feeder}");
    assert!(feeder["buses"].as_u64().unwrap() > 900, "{feeder}");
    let phases = &feeder["phases"];
    for p in ["a", "b", "c"] {
        let r = &phases[p];
        let (lo, hi) = (
            r["min_vm_pu"].as_f64().unwrap(),
            r["max_vm_pu"].as_f64().unwrap(),
        );
        assert!(0.85 < lo && lo <= hi && hi < 1.2, "phase {p}: {r}");
        assert!(!r["min_bus"].as_str().unwrap().is_empty());
    }
    assert!(
        phases["max_unbalance_pct"].as_f64().unwrap() > 0.0,
        "{phases}"
    );
    // The map: one circle per bus on the feeder's own coordinates; the profile: three phases.
    let map = ureq::get(&format!("{}/v1/charts/feeder.svg", demo.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(map.matches("<circle").count() > 900, "{}", &map[..300]);
    assert!(
        !map.contains("distance from the grid connection"),
        "drawn on its map"
    );
    let profile = ureq::get(&format!("{}/v1/charts/feeder-profile.svg", demo.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for label in [
        "phase a",
        "phase b",
        "phase c",
        "distance from the source (km)",
    ] {
        assert!(profile.contains(label), "{label}");
    }
    // The page shows each phase as the API has it.
    let url = format!("{}/#network", demo.url);
    let (dom, console) = headless(&chrome, &url, &["--dump-dom"]);
    assert!(console.is_empty(), "console: {console:#?}");
    assert!(!dom.contains("[object"), "{dom}");
    let pairs = shown(&dom);
    let phase_figures: Vec<_> = pairs
        .iter()
        .filter(|(k, _)| k.starts_with("feeder.phases."))
        .collect();
    assert_eq!(phase_figures.len(), 14, "{phase_figures:?}");
    for (key, value) in pairs.iter().filter(|(k, _)| k.starts_with("feeder.")) {
        let want = from_api(&demo.url, key).unwrap_or_else(|| panic!("{key} has no source"));
        assert_eq!(value, &want, "{key}");
    }
    assert!(dom.contains("/v1/charts/feeder-profile.svg"));
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let file = shots.join("network-opendss-desktop.png");
    let (_, console) = headless(
        &chrome,
        &url,
        &[
            "--window-size=1280,2400",
            &format!("--screenshot={}", file.display()),
        ],
    );
    assert!(console.is_empty(), "{console:#?}");
    // A balanced feeder has no profile to draw, and says so.
    let balanced = start_demo();
    let r = ureq::get(&format!("{}/v1/charts/feeder-profile.svg", balanced.url)).call();
    let Err(ureq::Error::Status(404, r)) = r else {
        panic!("a balanced feeder's profile: {r:?}");
    };
    assert!(r.into_string().unwrap().contains("solved balanced"));
    let f = common::get_json(&format!("{}/v1/grid/feeder", balanced.url));
    assert!(f["phases"].is_null(), "{f}");
}

#[test]
fn the_api_the_page_uses_is_documented_and_answers_to_its_schema() {
    let python = common::python();
    let demo = start_demo();
    let app_js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/dashboard/app.js");
    // Beyond the page's own requests: a cleared slot, a block, refusals.
    let history = common::get_json(&format!("{}/v1/market/history?slots=96", demo.url));
    let cleared = history["rows"].as_array().unwrap().last().unwrap()["slot"].clone();
    let member = gridmesh_sim::ledger::member(1, 0);
    let out = Command::new(python)
        .arg(common::interop_script("openapi_check.py"))
        .arg(&demo.url)
        .arg(&app_js)
        .args([
            "/v1/status",
            "/v1/grid",
            "/v1/market",
            "/v1/supply",
            "/v1/market/history?slots=96",
            "/v1/blocks?limit=15",
            "/v1/blocks/latest",
            "/v1/charts/prices.svg?slots=96",
            "/v1/grid/feeder",
            "/v1/charts/feeder.svg",
            &format!("/v1/market/trades?owner={member}"),
            &format!("/v1/market/orders?owner={member}"),
            &format!("/v1/homes/{member}/money.svg"),
            &format!("/v1/homes/{member}/plan.svg"),
            &format!("/v1/charts/depth.svg?slot={cleared}"),
            &format!("/v1/market/slots/{cleared}"),
            "/v1/market/history?slots=0",
            "/v1/blocks/999999",
            "/v1/accounts/not-an-address",
        ])
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("documented: /v1/events"), "{report}");
    let checked = report.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(checked, 19, "every answer checked: {report}");
}

#[test]
fn a_member_signs_in_on_the_page_and_sees_the_apis_figures_for_the_home() {
    let chrome = chromium();
    let run = tempfile::tempdir().unwrap();
    let out = run.path().join("run");
    let demo = start_demo_with(&["--set", "homes.count=30", "--out", out.to_str().unwrap()]);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    // While the node still serves, the run's report is written, and the members' key files
    // (issue 24: a newcomer had to derive one from the simulator's source).
    assert!(
        out.join("report.html").exists(),
        "the report waits for Ctrl-C"
    );
    assert_eq!(std::fs::read_dir(out.join("keys")).unwrap().count(), 30);
    let key = gridmesh_ledger::Keypair::load(&out.join("keys/home-0001.key")).unwrap();
    assert_eq!(
        key.address(),
        gridmesh_sim::ledger::member_key(1, 0).address()
    );

    let mut b = cdp::Browser::launch(&chrome);
    b.emulate(1280, 900, false, false);
    b.goto(&format!("{}/#home", demo.url));
    b.wait_for(
        "the sign-in form",
        "document.querySelector('#signin textarea')",
    );
    // A broken key file gets a clear message and no session.
    b.eval("document.querySelector('#key').value = '{\"address\": \"zz\"}'; document.querySelector('#signin button').click(); 1");
    b.wait_for(
        "the refusal",
        "document.querySelector('#signin-error').textContent.length > 0",
    );
    let why = b.eval("document.querySelector('#signin-error').textContent");
    assert!(why.as_str().unwrap().contains("64 hex digits"), "{why}");
    // An encrypted key file is named as such, with how to make a copy the browser can use.
    let sealed = run.path().join("sealed.key");
    std::fs::copy(out.join("keys/home-0001.key"), &sealed).unwrap();
    let encrypted = std::process::Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        .args(["keys", "encrypt", "--key", sealed.to_str().unwrap()])
        .env("GRIDMESH_KEY_PASSPHRASE", "a long passphrase")
        .output()
        .unwrap();
    assert!(encrypted.status.success(), "{encrypted:?}");
    b.eval(&format!(
        "document.querySelector('#key').value = {}; document.querySelector('#signin button').click(); 1",
        serde_json::to_string(&std::fs::read_to_string(&sealed).unwrap()).unwrap()
    ));
    b.wait_for(
        "the refusal of an encrypted key",
        "document.querySelector('#signin-error').textContent.includes('encrypted')",
    );
    let why = b.eval("document.querySelector('#signin-error').textContent");
    assert!(why.as_str().unwrap().contains("keys decrypt"), "{why}");
    // The real one signs in, chosen as the file the operator handed over (the key signs the
    // challenge in the browser).
    let input = b.call(
        "Runtime.evaluate",
        serde_json::json!({ "expression": "document.querySelector('#key-file')" }),
    );
    b.call(
        "DOM.setFileInputFiles",
        serde_json::json!({
            "objectId": input["result"]["objectId"],
            "files": [out.join("keys/home-0001.key").to_str().unwrap()],
        }),
    );
    b.wait_for(
        "the home page",
        "document.querySelector('[data-api=\"home.balance\"]')",
    );
    b.wait_for("the chart", "Array.from(document.querySelectorAll('figure img')).every(i => i.complete && i.naturalWidth > 0)");
    // Signed in as the checksummed address `gridmesh keys show` prints for the key file.
    let signed_in_as = b.eval("document.querySelector('#signed-in-as').textContent");
    assert_eq!(
        signed_in_as.as_str().unwrap(),
        key.address().checksummed(),
        "the page's encoding of the address"
    );
    let shown: Vec<(String, String)> = serde_json::from_value(b.eval(
        "Array.from(document.querySelectorAll('[data-api]')).map(e => [e.dataset.api, e.textContent])",
    ))
    .unwrap();

    // The same figures from the API, signed in from here.
    let c: serde_json::Value = ureq::post(&format!("{}/v1/auth/challenge", demo.url))
        .send_json(serde_json::json!({ "address": key.address().to_string() }))
        .unwrap()
        .into_json()
        .unwrap();
    let message = hex::decode(c["message"].as_str().unwrap()).unwrap();
    let s: serde_json::Value = ureq::post(&format!("{}/v1/auth/session", demo.url))
        .send_json(serde_json::json!({
            "address": key.address().to_string(),
            "challenge": c["challenge"],
            "signature": hex::encode(key.sign(&message)),
        }))
        .unwrap()
        .into_json()
        .unwrap();
    let home_view = |slots: u32| -> serde_json::Value {
        ureq::get(&format!(
            "{}/v1/homes/{}?slots={slots}",
            demo.url,
            key.address()
        ))
        .set(
            "Authorization",
            &format!("Bearer {}", s["token"].as_str().unwrap()),
        )
        .call()
        .unwrap()
        .into_json()
        .unwrap()
    };
    let (home, month) = (home_view(96), home_view(2976));
    // Nine figures of the day, six of the home's devices now (the simulator's last slot), seven
    // of the month.
    assert_eq!(shown.len(), 22, "{shown:?}");
    for (k, v) in &shown {
        if k == "home_month.traded_kwh" {
            let n = |f: &str| month["totals"][f].as_str().unwrap().parse::<f64>().unwrap();
            assert_eq!(v, &kwh(n("bought_kwh") + n("sold_kwh")), "{k}");
            continue;
        }
        let (doc, path) = match k.strip_prefix("home_month.") {
            Some(p) => (&month, p),
            None => (&home, k.strip_prefix("home.").unwrap()),
        };
        let want = path.split('.').fold(doc, |j, p| &j[p]);
        let want = match want.as_f64() {
            Some(x) if path.ends_with("soc_percent") => people(x, 0),
            Some(x) => people(x, 2),
            None if want.is_null() => "–".to_string(),
            None if path.ends_with("_kwh") => kwh(want.as_str().unwrap().parse().unwrap()),
            None => tokens(want.as_str().unwrap().parse().unwrap()),
        };
        assert_eq!(v, &want, "{k}");
    }
    // The energy-flow picture: each line's power is the API's, and what flows into the home
    // equals what flows out (PV + grid = consumption + battery + EV).
    let flows: Vec<(String, String)> = serde_json::from_value(b.eval(
        "Array.from(document.querySelectorAll('#energy-flows [data-flow]')).map(e => [e.dataset.flow, e.textContent])",
    ))
    .unwrap();
    let live = &home["live"];
    let flow = |k: &str| -> f64 {
        let text = &flows
            .iter()
            .find(|(f, _)| f == k)
            .unwrap_or_else(|| panic!("{k}: {flows:?}"))
            .1;
        text.trim_end_matches(" kW").parse().unwrap()
    };
    for k in ["pv_kw", "net_kw", "battery_kw", "ev_kw", "load_kw"] {
        let want = live[k].as_f64().unwrap().abs();
        assert_eq!(
            format!("{} kW", people(want, 2)),
            flows.iter().find(|(f, _)| f == k).unwrap().1,
            "{k}"
        );
    }
    let signed = |k: &str| flow(k) * live[k].as_f64().unwrap().signum();
    let into = flow("pv_kw") + signed("net_kw");
    let out = flow("load_kw") + signed("battery_kw") + flow("ev_kw");
    assert!(
        (into - out).abs() < 0.03,
        "in {into} kW, out {out} kW: {flows:?}"
    );
    let slot = home["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["delivery_start_ms"] == live["slot_start_ms"]);
    if let Some(row) = slot {
        let kwh = |f: &str| row[f].as_str().unwrap().parse::<f64>().unwrap();
        let p2p = (kwh("bought_kwh") - kwh("sold_kwh")) * 4.0;
        assert_eq!(
            format!("{} kW", people(p2p.abs(), 2)),
            flows.iter().find(|(f, _)| f == "p2p_kw").unwrap().1
        );
    }
    b.screenshot(&shots.join("home-desktop.png"));

    // An order placed on the page, signed here with the key in the browser, is on the ledger.
    b.goto(&format!("{}/#market", demo.url));
    b.wait_for("the order form", "document.querySelector('form#order')");
    let headings =
        b.eval("Array.from(document.querySelectorAll('h2')).map(h => h.textContent).join('|')");
    assert!(
        headings.as_str().unwrap().contains("My trades"),
        "{headings}"
    );
    let orders_url = format!("{}/v1/market/orders?owner={}", demo.url, key.address());
    // A member's orders are its own: read with its session.
    let token = s["token"].as_str().unwrap().to_string();
    let my_orders = |url: &str| -> serde_json::Value {
        ureq::get(url)
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .into_json()
            .unwrap()
    };
    assert!(matches!(
        ureq::get(&orders_url).call(),
        Err(ureq::Error::Status(401, _))
    ));
    let before = my_orders(&orders_url)["orders"].as_array().unwrap().len();
    let slot = b
        .eval("Number(document.querySelector('#o-slot').value)")
        .as_u64()
        .unwrap();
    b.eval(
        "document.querySelector('#o-energy').value = '0.75';
         document.querySelector('#o-price').value = '0.215';
         if (!document.querySelector('#o-location').value) document.querySelector('#o-location').value = 't1/s1/h1';
         document.querySelector('form#order button').click(); 1",
    );
    b.wait_for(
        "the order's block",
        "document.querySelector('#o-note').dataset.committed",
    );
    let orders = my_orders(&orders_url);
    let placed = orders["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["slot"] == slot && o["energy_kwh"] == "0.75")
        .unwrap_or_else(|| panic!("the order is on the ledger: {orders}"))
        .clone();
    assert_eq!(placed["price_per_kwh"], "0.215");
    assert_eq!(
        (placed["side"].as_str(), placed["status"].as_str()),
        (Some("bid"), Some("open"))
    );
    assert_eq!(orders["orders"].as_array().unwrap().len(), before + 1);
    // It is listed on the page, and cancelling it there takes it off the book.
    b.goto(&format!("{}/#ledger", demo.url));
    b.wait_for(
        "the ledger page",
        "document.getElementById('page').dataset.page === 'ledger'",
    );
    b.goto(&format!("{}/#market", demo.url));
    let cancel = format!("{}/{}", slot, placed["id"]);
    b.wait_for(
        "the cancel button",
        &format!("document.querySelector('[data-cancel=\"{cancel}\"]')"),
    );
    b.screenshot(&shots.join("market-signed-in.png"));
    b.eval(&format!(
        "document.querySelector('[data-cancel=\"{cancel}\"]').click(); 1"
    ));
    b.wait_for(
        "the cancellation's outcome",
        "(t => t && !t.startsWith('cancel submitted'))(document.querySelector('#cancel-note').textContent)",
    );
    let outcome = b.eval("document.querySelector('#cancel-note').textContent");
    assert!(
        outcome.as_str().unwrap().starts_with("committed"),
        "{outcome}"
    );
    let after = my_orders(&orders_url);
    assert!(
        !after["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["slot"] == slot && o["id"] == placed["id"] && o["status"] == "open"),
        "cancelled: {after}"
    );
    // Phone width, dark: the page restyles itself (no reload).
    b.emulate(390, 844, true, true);
    b.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(1))))");
    b.screenshot(&shots.join("home-phone-dark.png"));
    // Nothing makes the page wider than the phone: wide tables and charts scroll in their own box
    // (issue 24: tables overflowed at 390 px), and the charts keep a legible size.
    for page in ["market", "home"] {
        b.goto(&format!("{}/#{page}", demo.url));
        b.wait_for("the page", "document.querySelector('main h2')");
        let widths = b.eval(
            "[document.documentElement.scrollWidth, window.innerWidth,
              Math.min(...Array.from(document.querySelectorAll('figure img')).map(i => i.getBoundingClientRect().width))]",
        );
        let w = |i: usize| widths[i].as_f64().unwrap();
        assert!(w(0) <= w(1), "{page} at 390 px is {} px wide", w(0));
        assert!(w(2) >= 600.0, "{page}: a chart shrank to {} px", w(2));
    }
    // A chart follows the dark setting: its frame is recoloured by the reader's preference.
    let chart = ureq::get(&format!("{}/v1/charts/prices.svg?slots=96", demo.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        chart.contains("@media (prefers-color-scheme: dark)"),
        "{}",
        &chart[..300]
    );
    assert!(b.console.is_empty(), "console: {:#?}", b.console);
}
