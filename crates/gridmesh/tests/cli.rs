//! The command line and HTTP API against a real node process.

mod common;

use std::path::Path;
use std::process::Output;

use common::{gridmesh, stdout_json, NodeProc};

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `gridmesh tx transfer --key KEY --to TO --amount AMOUNT --node URL [extra...]`.
fn transfer(key: &Path, to: &str, amount: &str, url: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "tx",
        "transfer",
        "--key",
        key.to_str().unwrap(),
        "--to",
        to,
        "--amount",
        amount,
        "--node",
        url,
    ];
    args.extend_from_slice(extra);
    gridmesh(&args)
}

#[test]
fn keys_transfer_and_queries_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = NodeProc::start(&data, &[]);
    let url = node.url.clone();
    let faucet = data.join("faucet.key");
    assert!(
        faucet.exists(),
        "dev mode writes the faucet key into the data dir"
    );

    let alice_key = dir.path().join("alice.key");
    let out = gridmesh(&["keys", "new", "--out", alice_key.to_str().unwrap()]);
    assert!(out.status.success());
    // People get the checksummed form; the API speaks hex.
    let alice_text = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        alice_text.starts_with("gm1") && alice_text.len() == 61,
        "{alice_text}"
    );
    let alice = alice_text
        .parse::<gridmesh_types::Address>()
        .unwrap()
        .to_string();
    assert_eq!(
        String::from_utf8(
            gridmesh(&[
                "keys",
                "show",
                "--key",
                alice_key.to_str().unwrap(),
                "--hex"
            ])
            .stdout
        )
        .unwrap()
        .trim(),
        alice
    );
    // refuses to overwrite
    assert!(
        !gridmesh(&["keys", "new", "--out", alice_key.to_str().unwrap()])
            .status
            .success()
    );

    // A new address is refused until the sender says it is meant, with nothing sent.
    let out = transfer(&faucet, &alice_text, "12.5", &url, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("never seen") && err.contains("--new-recipient") && err.contains(&alice_text),
        "{err}"
    );
    // A slip in the checksummed form is caught before anything is signed.
    let mut typo = alice_text.clone().into_bytes();
    typo[20] = if typo[20] == b'q' { b'p' } else { b'q' };
    let typo = String::from_utf8(typo).unwrap();
    let out = transfer(&faucet, &typo, "12.5", &url, &["--new-recipient"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has a typo"), "{err}");

    let out = transfer(
        &faucet,
        &alice_text,
        "12.5",
        &url,
        &["--json", "--new-recipient"],
    );
    let committed = stdout_json(&out);
    assert_eq!(committed["status"], "committed");
    let hash = committed["hash"].as_str().unwrap().to_string();
    let height = committed["height"].as_u64().unwrap();
    assert!(height >= 1);

    let acct = stdout_json(&gridmesh(&[
        "query",
        "account",
        &alice_text,
        "--node",
        &url,
        "--json",
    ]));
    assert_eq!(
        acct,
        serde_json::json!({"address": alice, "checksummed": alice_text, "known": true,
            "balance": "12.5", "balance_base": 12_500_000u64, "nonce": 0})
    );
    let out = gridmesh(&["query", "account", &alice, "--node", &url]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{alice_text}: balance 12.5 tokens, next nonce 0")
    );

    let block = stdout_json(&gridmesh(&[
        "query",
        "block",
        &height.to_string(),
        "--node",
        &url,
        "--json",
    ]));
    assert_eq!(block["height"], height);
    assert!(block["txs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["hash"] == hash.as_str()));
    assert_eq!(
        block["receipts"].as_array().unwrap().len(),
        block["txs"].as_array().unwrap().len()
    );

    let tx = stdout_json(&gridmesh(&["query", "tx", &hash, "--node", &url, "--json"]));
    assert_eq!(tx["status"], "committed");
    assert_eq!(tx["receipt"]["status"], "ok");
    assert_eq!(
        tx["receipt"]["events"],
        serde_json::json!([]),
        "a transfer states its own effect"
    );
    assert_eq!(tx["tx"]["kind"], "transfer");
    assert_eq!(tx["tx"]["amount_base"], 12_500_000u64);
    assert_eq!(tx["tx"]["to"], alice.as_str());

    // Alice spends back; the second transfer uses the next nonce automatically.
    let faucet_addr =
        String::from_utf8(gridmesh(&["keys", "show", "--key", faucet.to_str().unwrap()]).stdout)
            .unwrap()
            .trim()
            .to_string();
    for amount in ["1", "0.5"] {
        let out = transfer(&alice_key, &faucet_addr, amount, &url, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let acct = stdout_json(&gridmesh(&[
        "query", "account", &alice, "--node", &url, "--json",
    ]));
    assert_eq!(acct["balance_base"], 11_000_000u64);
    assert_eq!(acct["nonce"], 2);

    // Bad input: clear errors, non-zero exit, nothing changes.
    let out = transfer(&alice_key, &faucet_addr, "1000", &url, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("insufficient_funds") && err.contains("insufficient funds"),
        "{err}"
    );
    let out = transfer(&alice_key, &faucet_addr, "1", &url, &["--nonce", "0"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stale_nonce"),
        "replay is refused"
    );
    let out = transfer(&alice_key, "nothex", "1", &url, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not 64 hex"));
    let out = transfer(&alice_key, &faucet_addr, "0.0000001", &url, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("decimal places"));
    let out = gridmesh(&[
        "query",
        "account",
        &alice,
        "--node",
        "http://127.0.0.1:9",
        "--json",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the node"));
    let acct = stdout_json(&gridmesh(&[
        "query", "account", &alice, "--node", &url, "--json",
    ]));
    assert_eq!(acct["balance_base"], 11_000_000u64);

    let status = stdout_json(&gridmesh(&["query", "status", "--node", &url, "--json"]));
    assert_eq!(status["total_supply"], "1000000000");
    node.terminate();
}

#[test]
fn http_api_errors_are_json_and_openapi_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    let url = &node.url;
    let post = |body: &str| match ureq::post(&format!("{url}/v1/tx"))
        .set("content-type", "application/json")
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    for (body, code, error) in [
        ("not json", 400, "bad_request"),
        (r#"{"tx": "zz"}"#, 400, "malformed_tx"),
        (r#"{"tx": "0102"}"#, 400, "malformed_tx"),
    ] {
        let (status, text) = post(body);
        assert_eq!(status, code, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"], error);
        assert!(v["message"].as_str().unwrap().len() > 5);
    }
    let (status, _) = post(&format!(r#"{{"tx": "{}"}}"#, "00".repeat(10_000)));
    assert_eq!(status, 413, "oversized bodies are refused");

    // Random garbage, as bodies and as hex transactions: always a 4xx, never a dead node.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..300 {
        let len = rng.gen_range(0..400);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let body = if i % 2 == 0 {
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            format!(r#"{{"tx": "{}"}}"#, hex_string(&bytes))
        };
        let (status, text) = post(&body);
        assert!((400..500).contains(&status), "{status}: {text}");
    }

    let get = |path: &str| match ureq::get(&format!("{url}{path}")).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(get("/v1/accounts/xyz").0, 400);
    assert_eq!(get("/v1/blocks/999999").0, 404);
    assert_eq!(get(&format!("/v1/tx/{}", "ab".repeat(32))).0, 404);
    let (status, block0) = get("/v1/blocks/0");
    assert_eq!(status, 200);
    assert!(block0.contains("\"height\":0"));

    let (status, doc) = get("/v1/openapi.json");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    for path in [
        "/v1/status",
        "/v1/tx",
        "/v1/txs",
        "/v1/tx/{hash}",
        "/v1/accounts/{address}",
        "/v1/blocks/{height}",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    let (status, metrics) = get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("gridmesh_block_height"));
}

#[test]
fn broken_genesis_and_key_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(&genesis, "chain_id = 42\n").unwrap();
    let out = gridmesh(&[
        "node",
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("genesis file"));

    // A data directory whose database is not a database: a clear error, no panic, nothing overwritten.
    let data = dir.path().join("broken");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("chain.redb"), b"this is not a redb file").unwrap();
    let out = gridmesh(&[
        "node",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("opening the chain in") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(data.join("chain.redb")).unwrap(),
        b"this is not a redb file"
    );

    let key = dir.path().join("bad.key");
    std::fs::write(&key, "{}").unwrap();
    let out = gridmesh(&["keys", "show", "--key", key.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a gridmesh key"));
}

#[test]
fn genesis_file_sets_chain_and_balances() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("treasurer.key");
    let addr = String::from_utf8(gridmesh(&["keys", "new", "--out", key.to_str().unwrap()]).stdout)
        .unwrap()
        .trim()
        .to_string();
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        format!("chain_id = \"coop-street\"\ntimestamp_ms = 1767225600000\n[[accounts]]\naddress = \"{addr}\"\nbalance = \"250.5\"\n"),
    )
    .unwrap();
    let node = NodeProc::start(
        &dir.path().join("d"),
        &["--genesis", genesis.to_str().unwrap()],
    );
    let status = stdout_json(&gridmesh(&[
        "query", "status", "--node", &node.url, "--json",
    ]));
    assert_eq!(status["chain_id"], "coop-street");
    assert_eq!(status["total_supply_base"], 250_500_000u64);
    assert!(
        !dir.path().join("d/faucet.key").exists(),
        "no faucet with a real genesis"
    );
    let acct = stdout_json(&gridmesh(&[
        "query", "account", &addr, "--node", &node.url, "--json",
    ]));
    assert_eq!(acct["balance"], "250.5");
    // For people too, the result is on stdout (issue 24: `query account X | grep balance` found
    // nothing).
    let text = gridmesh(&["query", "account", &addr, "--node", &node.url]);
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(
        shown.contains("balance") && shown.contains("250.5"),
        "{shown}"
    );
}

#[test]
fn the_demo_tour_runs_and_reports_json() {
    // Its node listens where --listen says (issue 24: the tour ignored it).
    let port = common::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = gridmesh(&["demo", "--tour", "--json", "--listen", &listen]);
    let report = stdout_json(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("http://{listen}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["total_supply"], "1000000000");
    // The grid part: the congestion example within limits with envelopes, the outage example
    // with all critical load served.
    assert!(report["grid"]["congestion"]["constrained"]["violation"].is_null());
    assert!(
        report["grid"]["congestion"]["unconstrained"]["transformer_loading_pct"]
            .as_f64()
            .unwrap()
            > 200.0
    );
    assert_eq!(
        report["grid"]["island"]["outages"][1]["critical_load_served_pct"],
        100.0
    );
    // The devices part: both liars slashed, the supply reconciled after the epoch's rewards.
    let d = &report["devices"];
    assert_eq!(d["slashed"].as_array().unwrap().len(), 2, "{d}");
    assert_eq!(d["supply_reconciled"], true);
    assert!(stderr_has_devices_line(&out.stderr));
    assert_eq!(report["transfers"].as_array().unwrap().len(), 9);
    assert_eq!(report["refused"].as_array().unwrap().len(), 4);
    for r in report["refused"].as_array().unwrap() {
        assert!(!r["error"].as_str().unwrap().contains("ACCEPTED"));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Committed: height"));
    // The households traded one market slot, and it settled for good.
    let m = &report["market"];
    assert_eq!(m["status"], "final");
    assert_eq!(m["volume_kwh"], "2");
    assert!(m["trades"].as_array().unwrap().len() >= 3);
    let dev_short = m["trades"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["settlement"]["compensation"] != "0")
        .count();
    assert!(dev_short >= 1, "Dev's shortfall is compensated");
    assert!(m["bills"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["estimated"] == true));
}

#[test]
fn batch_submission_admits_each_transaction_on_its_own() {
    use gridmesh_client::client::Client;
    use gridmesh_ledger::{Keypair, SignedTx};
    use gridmesh_types::{Address, Amount};

    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    let client = Client::new(&node.url);
    let faucet = Keypair::load(&dir.path().join("faucet.key")).unwrap();
    let chain = client.status().unwrap().chain_id;
    let mut txs: Vec<SignedTx> = (0..300)
        .map(|n| {
            SignedTx::transfer(
                &faucet,
                &chain,
                n,
                Address([n as u8; 32]),
                Amount(1_000 + n as u128),
            )
        })
        .collect();
    txs[250].signature[0] ^= 1; // forged
    txs.push(SignedTx::transfer(
        &faucet,
        &chain,
        5,
        Address([1; 32]),
        Amount(1),
    )); // nonce in use
    let r = client.submit_batch(&txs).unwrap();
    assert_eq!((r.accepted, r.rejected), (299, 2));
    assert_eq!(r.results[250].error.as_deref(), Some("bad_signature"));
    assert_eq!(r.results[300].error.as_deref(), Some("nonce_in_use"));
    let last: gridmesh_types::Hash32 = r.results[299].hash.as_ref().unwrap().parse().unwrap();
    // Nonce 250 is missing, so only 0..=249 can commit; 251.. wait for it. Fill the gap and all
    // commit.
    let fill = SignedTx::transfer(&faucet, &chain, 250, Address([250; 32]), Amount(1_250));
    client.submit(&fill).unwrap();
    let done = client
        .wait_committed(&last, std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(done.status, "committed");
    assert_eq!(client.account(&faucet.address()).unwrap().nonce, 300);

    // Not hex, and too many.
    let bad =
        ureq::post(&format!("{}/v1/txs", node.url)).send_json(serde_json::json!({"txs": ["zz"]}));
    let body: serde_json::Value = bad.unwrap().into_json().unwrap();
    assert_eq!(body["results"][0]["error"], "malformed_tx");
    // More than 64 waiting behind a missing nonce, and a key without tokens.
    let nonce = client.account(&faucet.address()).unwrap().nonce;
    let gapped: Vec<SignedTx> = (1..=65)
        .map(|n| SignedTx::transfer(&faucet, &chain, nonce + n, Address([1; 32]), Amount(1)))
        .collect();
    let r = client.submit_batch(&gapped).unwrap();
    assert_eq!((r.accepted, r.rejected), (64, 1));
    assert_eq!(r.results[64].error.as_deref(), Some("too_many_gapped"));

    // The sender sees them waiting and drops them (issue 24): only it, only the gapped ones.
    let faucet_key = dir.path().join("faucet.key");
    let url = node.url.clone();
    let pending = stdout_json(&gridmesh(&[
        "query",
        "pending",
        &faucet.address().checksummed(),
        "--node",
        &url,
        "--json",
    ]));
    assert_eq!(pending["next_nonce"], nonce);
    assert_eq!(pending["ready"].as_array().unwrap().len(), 0);
    assert_eq!(pending["gapped"].as_array().unwrap().len(), 64);
    assert_eq!(pending["gapped"][0]["nonce"], nonce + 1);
    let stranger = Keypair::from_seed([0x77; 32]);
    let token = client.sign_in(&stranger).unwrap();
    match client.drop_gapped(&faucet.address(), &token, None) {
        Err(e) => assert!(e.to_string().contains("only the account itself"), "{e}"),
        Ok(d) => panic!("a stranger dropped {d:?}"),
    }
    let anonymous = ureq::delete(&format!("{url}/v1/accounts/{}/pending", faucet.address())).call();
    assert!(matches!(anonymous, Err(ureq::Error::Status(401, _))));
    let out = gridmesh(&[
        "tx",
        "drop-gapped",
        "--key",
        faucet_key.to_str().unwrap(),
        "--from-nonce",
        &(nonce + 33).to_string(),
        "--node",
        &url,
        "--json",
    ]);
    let d = stdout_json(&out);
    assert_eq!(d["dropped"].as_array().unwrap().len(), 32);
    assert_eq!(d["dropped"][0]["nonce"], nonce + 33);
    assert_eq!(d["pending"]["gapped"].as_array().unwrap().len(), 32);
    let out = gridmesh(&[
        "tx",
        "drop-gapped",
        "--key",
        faucet_key.to_str().unwrap(),
        "--node",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("dropped ").count(), 32, "{text}");
    assert!(
        text.contains("still pending: 0 ready, 0 behind a gap"),
        "{text}"
    );
    // A dropped transaction says why, and its nonce is free again.
    let first: gridmesh_types::Hash32 = r.results[0].hash.as_ref().unwrap().parse().unwrap();
    match client.tx(&first) {
        Err(e) => assert!(e.to_string().contains("dropped by its sender"), "{e}"),
        Ok(t) => panic!("a dropped transaction is {t:?}"),
    }
    let again = SignedTx::transfer(&faucet, &chain, nonce + 1, Address([2; 32]), Amount(1));
    client.submit(&again).unwrap();
    let pauper = Keypair::from_seed([0x5a; 32]);
    let cancel = SignedTx::new(
        &pauper,
        &chain,
        0,
        gridmesh_ledger::tx::TxKind::CancelOrder {
            slot: 1,
            order_id: 1,
        },
    );
    let r = client.submit_batch(&[cancel]).unwrap();
    assert_eq!(r.results[0].error.as_deref(), Some("insufficient_funds"));
    let many = vec!["00"; 1001];
    match ureq::post(&format!("{}/v1/txs", node.url)).send_json(serde_json::json!({ "txs": many }))
    {
        Err(ureq::Error::Status(400, r)) => {
            let v: serde_json::Value = r.into_json().unwrap();
            assert_eq!(v["error"], "batch_too_large");
        }
        other => panic!("expected 400, got {other:?}"),
    }
}

fn stderr_has_devices_line(stderr: &[u8]) -> bool {
    String::from_utf8_lossy(stderr).contains("devices: the day's epoch minted")
}

/// Shell completions and the manual page (issue 24), on stdout.
#[test]
fn shell_completions_and_the_manual_page_are_printed() {
    for (shell, needle) in [
        ("bash", "_gridmesh()"),
        ("zsh", "#compdef gridmesh"),
        ("fish", "complete -c gridmesh"),
    ] {
        let out = gridmesh(&["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains(needle),
            "{shell}: {script}"
        );
        assert!(
            script.contains("register-device"),
            "{shell}: the subcommands' flags"
        );
    }
    let out = gridmesh(&["man"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH gridmesh 1") && page.contains("community"),
        "{page}"
    );
    assert!(!gridmesh(&["completions", "tcsh"]).status.success());
}

/// `/v1/status` names the node's version and health, and logs come as JSON lines on request
/// (issue 24: observability).
#[test]
fn status_says_version_and_health_and_logs_can_be_json() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        .args(["node", "--log-format", "json", "--data-dir"])
        .arg(dir.path().join("d"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    let mut json_lines = 0;
    for line in stderr.lines().map_while(Result::ok).take(200) {
        if let Some(rest) = line.split("API on ").nth(1) {
            url = Some(rest.trim_end_matches("/v1/status").to_string());
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
            json_lines += 1;
        } else {
            panic!("a log line that is not JSON: {line}");
        }
        if url.is_some() && json_lines >= 2 {
            break;
        }
    }
    let url = url.expect("the node's address");
    let status = common::get_json(&format!("{url}/v1/status"));
    let metrics = ureq::get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["health"], "ok");
    assert!(status["head_age_ms"].is_u64(), "{status}");
    // The API's latency by route, and how far the head lags.
    assert!(
        metrics.contains("gridmesh_api_request_duration_seconds_count{route=\"/v1/status\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("gridmesh_head_age_seconds "), "{metrics}");
}

/// `./scripts/package` (issue 24): a Debian package whose binary runs, whose systemd unit
/// `systemd-analyze verify` takes without a word, and whose default config starts a node.
#[test]
fn the_debian_package_holds_a_binary_a_unit_and_a_config_that_work() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(repo.join("scripts/package"))
        .args([
            "--fast",
            "--binary",
            env!("CARGO_BIN_EXE_gridmesh"),
            "--out",
        ])
        .arg(dir.path().join("deb"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let field = |f: &str| {
        let o = Command::new("dpkg-deb")
            .args(["-f", &deb, f])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "gridmesh");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert!(field("Depends").contains("adduser"));
    let root = dir.path().join("root");
    assert!(Command::new("dpkg-deb")
        .args(["-x", &deb])
        .arg(&root)
        .status()
        .unwrap()
        .success());
    // The binary, stripped, runs.
    let bin = root.join("usr/bin/gridmesh");
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("gridmesh "));
    let symbols = Command::new("nm").arg(&bin).output().unwrap();
    assert!(
        !symbols.status.success() || symbols.stdout.is_empty(),
        "not stripped"
    );
    for f in [
        "usr/share/man/man1/gridmesh.1.gz",
        "usr/share/bash-completion/completions/gridmesh",
        "usr/share/doc/gridmesh/copyright",
    ] {
        assert!(root.join(f).exists(), "{f}");
    }
    // The unit: its own user, its state under /var/lib, restarted on failure; verified by
    // systemd with the binary where the package puts it.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/gridmesh.service")).unwrap();
    for line in [
        "User=gridmesh",
        "Restart=on-failure",
        "StateDirectory=gridmesh",
        "ExecStart=/usr/bin/gridmesh node --config /etc/gridmesh/node.toml",
    ] {
        assert!(unit.contains(line), "{line}");
    }
    let here = dir.path().join("gridmesh.service");
    std::fs::write(
        &here,
        unit.replace("/usr/bin/gridmesh", bin.to_str().unwrap()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&here)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
    for script in ["postinst", "prerm"] {
        let s = repo.join("packaging").join(script);
        assert!(Command::new("sh")
            .arg("-n")
            .arg(&s)
            .status()
            .unwrap()
            .success());
    }
    // The default config starts a node (the data directory and address given here instead).
    let node = common::NodeProc::spawn(&[
        "--config".into(),
        root.join("etc/gridmesh/node.toml").display().to_string(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]);
    assert_eq!(
        common::get_json(&format!("{}/v1/status", node.url))["health"],
        "ok"
    );
    node.terminate();
}

/// Key files encrypted with a passphrase (issue 24): made, used, refused without or with a
/// wrong passphrase, and copied back in plain.
#[test]
fn an_encrypted_key_signs_only_with_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = NodeProc::start(&data, &[]);
    let with = |args: &[&str], env: &[(&str, &str)]| -> Output {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gridmesh"));
        c.args(args)
            .env("RUST_LOG", "warn")
            .env_remove("GRIDMESH_KEY_PASSPHRASE")
            .env_remove("GRIDMESH_KEY_PASSPHRASE_FILE");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let key = dir.path().join("bob.key");
    let k = key.to_str().unwrap();
    let pass_file = dir.path().join("passphrase");
    std::fs::write(&pass_file, "bob's long passphrase\n").unwrap();
    let pass = [("GRIDMESH_KEY_PASSPHRASE_FILE", pass_file.to_str().unwrap())];

    // Too short, and no passphrase at all off a terminal: nothing is written.
    let out = with(
        &["keys", "new", "--out", k, "--encrypt"],
        &[("GRIDMESH_KEY_PASSPHRASE", "short")],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 8"));
    let out = with(&["keys", "new", "--out", k, "--encrypt"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no passphrase"));
    assert!(!key.exists());

    let made = stdout_json(&with(
        &["keys", "new", "--out", k, "--encrypt", "--json"],
        &pass,
    ));
    let bob = made["address"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(&key).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["encrypted"]["kdf"], "argon2id");
    assert!(file.get("secret_key").is_none(), "{text}");
    // The address is readable without the passphrase.
    let shown = with(&["keys", "show", "--key", k, "--hex"], &[]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), bob);

    common::transfer(
        &node.url,
        data.join("faucet.key").to_str().unwrap(),
        &bob,
        "3",
    );
    let faucet = String::from_utf8(
        with(
            &[
                "keys",
                "show",
                "--key",
                data.join("faucet.key").to_str().unwrap(),
            ],
            &[],
        )
        .stdout,
    )
    .unwrap();
    let send = |env: &[(&str, &str)]| {
        with(
            &[
                "tx",
                "transfer",
                "--key",
                k,
                "--to",
                faucet.trim(),
                "--amount",
                "1",
                "--node",
                &node.url,
            ],
            env,
        )
    };
    let out = send(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is encrypted") && err.contains("GRIDMESH_KEY_PASSPHRASE_FILE"),
        "{err}"
    );
    let out = send(&[("GRIDMESH_KEY_PASSPHRASE", "not bob's passphrase")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase is wrong"));
    let out = send(&pass);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acct = stdout_json(&gridmesh(&[
        "query", "account", &bob, "--node", &node.url, "--json",
    ]));
    assert_eq!(acct["nonce"], 1);

    // A plain copy (for the dashboard), and encrypting a plain key in place.
    let plain = dir.path().join("bob-plain.key");
    let p = plain.to_str().unwrap();
    assert!(with(&["keys", "decrypt", "--key", k, "--out", p], &pass)
        .status
        .success());
    let copy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plain).unwrap()).unwrap();
    assert_eq!(copy["address"], bob.as_str());
    assert_eq!(copy["secret_key"].as_str().unwrap().len(), 64);
    let out = with(&["keys", "encrypt", "--key", k], &pass);
    assert!(String::from_utf8_lossy(&out.stderr).contains("encrypted already"));
    assert!(with(&["keys", "encrypt", "--key", p], &pass)
        .status
        .success());
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plain).unwrap()).unwrap();
    assert!(again.get("secret_key").is_none() && again["encrypted"].is_object());
    let shown = with(&["keys", "show", "--key", p, "--hex"], &[]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), bob);
}

/// `gridmesh genesis` refuses what would make a broken community, naming the mistake (issue 24).
#[test]
fn genesis_commands_refuse_mistakes_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    assert!(gridmesh(&["keys", "new", "--out", &p("v.key")])
        .status
        .success());
    let err = |out: Output| String::from_utf8_lossy(&out.stderr).to_string();
    let e = err(gridmesh(&[
        "genesis",
        "validator",
        "--key",
        &p("v.key"),
        "--p2p-address",
        "node-1",
    ]));
    assert!(e.contains("HOST:PORT") && e.contains("no port"), "{e}");
    let out = gridmesh(&[
        "genesis",
        "validator",
        "--key",
        &p("v.key"),
        "--p2p-address",
        "node-1.coop:26600",
        "--out",
        &p("v.toml"),
    ]);
    assert!(out.status.success(), "{}", err(out));
    std::fs::write(p("junk.toml"), "chain_id = \"x\"\n").unwrap();
    let e = err(gridmesh(&[
        "genesis",
        "assemble",
        "--chain-id",
        "c",
        "--validator",
        &p("junk.toml"),
        "--out",
        &p("g.toml"),
    ]));
    assert!(e.contains("is not a validator entry"), "{e}");
    let e = err(gridmesh(&[
        "genesis",
        "assemble",
        "--chain-id",
        "c",
        "--validator",
        &p("v.toml"),
        "--validator",
        &p("v.toml"),
        "--out",
        &p("g.toml"),
    ]));
    assert!(e.contains("twice"), "{e}");
    let e = err(gridmesh(&[
        "genesis",
        "assemble",
        "--validator",
        &p("v.toml"),
        "--out",
        &p("g.toml"),
    ]));
    assert!(e.contains("no chain id"), "{e}");
    let e = err(gridmesh(&[
        "genesis",
        "assemble",
        "--chain-id",
        "c",
        "--validator",
        &p("v.toml"),
        "--account",
        "gm1qqqq=5",
        "--out",
        &p("g.toml"),
    ]));
    assert!(e.contains("--account"), "{e}");
    assert!(
        !dir.path().join("g.toml").exists(),
        "nothing written on a mistake"
    );
    let out = gridmesh(&[
        "genesis",
        "assemble",
        "--chain-id",
        "c",
        "--validator",
        &p("v.toml"),
        "--timestamp-ms",
        "1767225600000",
        "--out",
        &p("g.toml"),
    ]);
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with("genesis hash "), "{hash} {}", err(out));
    let shown = stdout_json(&gridmesh(&[
        "genesis",
        "hash",
        "--genesis",
        &p("g.toml"),
        "--json",
    ]));
    assert_eq!(
        format!("genesis hash {}", shown["genesis_hash"].as_str().unwrap()),
        hash
    );
    let e = err(gridmesh(&[
        "genesis",
        "assemble",
        "--chain-id",
        "c",
        "--validator",
        &p("v.toml"),
        "--out",
        &p("g.toml"),
    ]));
    assert!(e.contains("already exists"), "{e}");
}
