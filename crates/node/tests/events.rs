//! `GET /v1/events` on a running node: a greeting, then a message per committed block; a bounded
//! number of streams; and the dashboard's own endpoints refusing bad parameters.

mod common;

use std::time::Duration;

use gridmesh_client::client::Client;
use gridmesh_ledger::{Keypair, SignedTx};
use gridmesh_node::{RunningNode, FAUCET_KEY_FILE};
use gridmesh_types::{Address, Amount};

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

fn next_json(ws: &mut Socket) -> serde_json::Value {
    loop {
        match ws.read().expect("a message") {
            tungstenite::Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// An event stream opened from the loopback address `from` (another client, as the node sees it).
fn stream_from(from: [u8; 4], to: std::net::SocketAddr) -> Result<Socket, tungstenite::Error> {
    let tcp = common::connect_from(from, to);
    let tcp = tungstenite::stream::MaybeTlsStream::Plain(tcp);
    match tungstenite::client(format!("ws://{to}/v1/events"), tcp) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => unreachable!("blocking socket"),
    }
}

fn dev_node(block_interval: Duration) -> (tokio::runtime::Runtime, tempfile::TempDir, RunningNode) {
    common::dev_node(|cfg| cfg.block_interval = block_interval)
}

#[test]
fn the_stream_greets_then_reports_every_block_and_is_bounded() {
    let (rt, dir, node) = dev_node(Duration::from_millis(50));
    let base = format!("{}", node.api_addr);

    let (mut ws, _) = tungstenite::connect(format!("ws://{base}/v1/events")).unwrap();
    let hello = next_json(&mut ws);
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["chain_id"], "gridmesh-dev");
    let start = hello["height"].as_u64().unwrap();

    // A transfer commits in the next block, and the stream says so.
    let client = Client::new(&format!("http://{base}"));
    let faucet = Keypair::load(&dir.path().join(FAUCET_KEY_FILE)).unwrap();
    let chain = client.status().unwrap().chain_id;
    let tx = SignedTx::transfer(&faucet, &chain, 0, Address([7; 32]), Amount(1_000));
    let hash = client.submit(&tx).unwrap().hash.parse().unwrap();
    let done = client
        .wait_committed(&hash, Duration::from_secs(10))
        .unwrap();
    let block = next_json(&mut ws);
    assert_eq!(block["type"], "block");
    assert_eq!(block["height"].as_u64().unwrap(), start + 1);
    assert_eq!(block["height"].as_u64(), done.height);
    assert_eq!(block["txs"], 1);
    assert_eq!(block["hash"].as_str().unwrap().len(), 64);

    // At most MAX_SUBSCRIBERS_PER_CLIENT streams from one address, MAX_SUBSCRIBERS in all: one
    // more is refused with 503, and a closed one frees its place.
    use gridmesh_node::events::{MAX_SUBSCRIBERS, MAX_SUBSCRIBERS_PER_CLIENT};
    let addr = node.api_addr;
    let mut open = vec![ws];
    match stream_from([127, 0, 0, 1], addr) {
        Err(tungstenite::Error::Http(r)) => {
            panic!("a second stream from one address: {}", r.status())
        }
        Err(e) => panic!("{e}"),
        Ok(w) => open.push(w),
    }
    while open.len() < MAX_SUBSCRIBERS_PER_CLIENT {
        open.push(stream_from([127, 0, 0, 1], addr).unwrap());
    }
    match stream_from([127, 0, 0, 1], addr) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503 for one address's fifth stream, got {other:?}"),
    }
    let mut host = 2u8;
    while open.len() < MAX_SUBSCRIBERS {
        for _ in 0..MAX_SUBSCRIBERS_PER_CLIENT.min(MAX_SUBSCRIBERS - open.len()) {
            open.push(stream_from([127, 0, 0, host], addr).unwrap());
        }
        host += 1;
    }
    match stream_from([127, 0, 0, 200], addr) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503 past {MAX_SUBSCRIBERS} streams, got {other:?}"),
    }
    let mut last = open.pop().unwrap();
    last.close(None).unwrap();
    while last.read().is_ok() {}
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match stream_from([127, 0, 0, 200], addr) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("a closed stream's place was not freed: {e}"),
        }
    }
    drop(open);
    rt.block_on(node.stop()).unwrap();
}

#[test]
fn the_dashboard_endpoints_refuse_bad_parameters_and_serve_svg() {
    let (rt, _dir, node) = dev_node(Duration::from_secs(1));
    let url = format!("http://{}", node.api_addr);
    for (path, status) in [
        ("/v1/market/history?slots=0", 400),
        ("/v1/market/history?slots=673", 400),
        ("/v1/market/history?slots=x", 400),
        ("/v1/blocks?limit=0", 400),
        ("/v1/blocks?limit=101", 400),
        ("/v1/charts/prices.svg?slots=9999", 400),
        ("/v1/charts/depth.svg?slot=5", 404),
        ("/v1/charts/depth.svg", 400),
    ] {
        match ureq::get(&format!("{url}{path}")).call() {
            Err(ureq::Error::Status(code, _)) => assert_eq!(code, status, "{path}"),
            other => panic!("{path}: expected {status}, got {other:?}"),
        }
    }
    let blocks: serde_json::Value = ureq::get(&format!("{url}/v1/blocks"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(blocks["blocks"][0]["height"], 0, "the genesis block");
    let r = ureq::get(&format!("{url}/v1/charts/prices.svg"))
        .call()
        .unwrap();
    assert_eq!(r.content_type(), "image/svg+xml");
    let svg = r.into_string().unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("tokens/kWh"),
        "{svg}"
    );
    let doc: serde_json::Value = ureq::get(&format!("{url}/v1/openapi.json"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    for p in [
        "/v1/events",
        "/v1/market/history",
        "/v1/blocks",
        "/v1/charts/prices.svg",
        "/v1/charts/depth.svg",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} is documented");
    }
    rt.block_on(node.stop()).unwrap();
}

#[test]
fn a_node_without_a_feeder_view_says_so() {
    let (rt, _dir, node) = dev_node(Duration::from_secs(1));
    let url = format!("http://{}", node.api_addr);
    let v: serde_json::Value = ureq::get(&format!("{url}/v1/grid/feeder"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(v["available"], false);
    assert!(v["latest"].is_null());
    match ureq::get(&format!("{url}/v1/charts/feeder.svg")).call() {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    rt.block_on(node.stop()).unwrap();
}
