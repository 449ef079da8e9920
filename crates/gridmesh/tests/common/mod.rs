//! Helpers for tests that run the real `gridmesh` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gridmesh");

/// A `gridmesh node` child process with its API URL.
pub struct NodeProc {
    pub child: Child,
    pub url: String,
}

impl NodeProc {
    /// Starts a node on an ephemeral port and waits until its API answers.
    pub fn start(data_dir: &Path, extra: &[&str]) -> NodeProc {
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--block-interval-ms".into(),
            "100".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        NodeProc::spawn(&args)
    }

    /// Starts `gridmesh node ARGS` and waits until its API answers.
    pub fn spawn(args: &[String]) -> NodeProc {
        let mut child = Command::new(BIN)
            .arg("node")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gridmesh node");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("API on ").nth(1) {
                        let url = rest.trim_end_matches("/v1/status").to_string();
                        let _ = tx.send(url);
                        sent = true;
                    }
                }
                // keep draining so the node never blocks on a full pipe
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("node printed its API address");
        let start = Instant::now();
        // Over HTTPS through the client's TLS (which trusts GRIDMESH_CA_CERT).
        let answers = |url: &str| match url.starts_with("https://") {
            true => gridmesh_client::client::Client::new(url).status().is_ok(),
            false => ureq::get(&format!("{url}/v1/status")).call().is_ok(),
        };
        while !answers(&url) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node API never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NodeProc { child, url }
    }

    pub fn kill9(mut self) {
        // std's kill sends SIGKILL on Unix: no shutdown code runs.
        self.child.kill().expect("kill node");
        self.child.wait().expect("reap node");
    }

    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("node did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI and returns its output.
pub fn gridmesh(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gridmesh")
}

pub fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Polls `f` every 100 ms until it holds; fails the test after 90 s, naming `what`.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Registers a 5 kW battery with its own key (`device_key`) at `location` for the owner with
/// `owner_key`: a device that may sell. The CLI's JSON answer.
pub fn register_keyed_battery(
    url: &str,
    device_key: &str,
    owner_key: &str,
    location: &str,
) -> serde_json::Value {
    register_keyed_device(url, owner_key, device_key, "battery", "5", location)
}

/// Registers a device of `kind` rated `capacity_kw` with its own key (`device_key`) at `location`
/// (coordinates in Zurich; [`register_keyed_device_at`] elsewhere) for the owner with
/// `owner_key`, bonding what the market asks: 10 tokens, or 1 per kW of an earning device,
/// whichever is more. The CLI's JSON answer.
pub fn register_keyed_device(
    url: &str,
    owner_key: &str,
    device_key: &str,
    kind: &str,
    capacity_kw: &str,
    location: &str,
) -> serde_json::Value {
    register_keyed_device_at(
        url,
        owner_key,
        device_key,
        kind,
        capacity_kw,
        location,
        ("47.37", "8.54"),
    )
}

/// [`register_keyed_device`] at `(latitude, longitude)`.
pub fn register_keyed_device_at(
    url: &str,
    owner_key: &str,
    device_key: &str,
    kind: &str,
    capacity_kw: &str,
    location: &str,
    (latitude, longitude): (&str, &str),
) -> serde_json::Value {
    let kw: f64 = capacity_kw.parse().expect("a capacity in kW");
    let bond = kw.ceil().max(10.0).to_string();
    stdout_json(&gridmesh(&[
        "tx",
        "register-device",
        "--kind",
        kind,
        "--capacity-kw",
        capacity_kw,
        "--device-key",
        device_key,
        "--location",
        location,
        "--latitude",
        latitude,
        "--longitude",
        longitude,
        "--bond",
        &bond,
        "--key",
        owner_key,
        "--node",
        url,
        "--json",
    ]))
}

/// `tx device-reading` of `slot` for the device with `device_key`, sent with its owner's
/// `owner_key`, once the slot has ended: without other traffic the chain's clock moves with its
/// blocks, and each refused attempt ("can only come after") makes one. The CLI's JSON answer.
pub fn device_reading_after_slot(
    url: &str,
    device_key: &str,
    owner_key: &str,
    slot: &str,
    out_kwh: &str,
) -> serde_json::Value {
    let args = [
        "tx",
        "device-reading",
        "--device-key",
        device_key,
        "--slot",
        slot,
        "--out-kwh",
        out_kwh,
        "--key",
        owner_key,
        "--node",
        url,
        "--json",
    ];
    let mut answer = None;
    wait_for("the slot to end", || {
        let out = gridmesh(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("can only come after"),
            "{err}"
        );
        if out.status.success() {
            answer = Some(stdout_json(&out));
        }
        out.status.success()
    });
    answer.expect("the reading was accepted")
}

/// `tx transfer` of `amount` tokens from the key file `from` to the address `to` (new to the
/// chain or not), committed. The CLI's JSON answer.
pub fn transfer(url: &str, from: &str, to: &str, amount: &str) -> serde_json::Value {
    stdout_json(&gridmesh(&[
        "tx",
        "transfer",
        "--key",
        from,
        "--to",
        to,
        "--amount",
        amount,
        "--node",
        url,
        "--json",
        "--new-recipient",
    ]))
}

/// A new key file `NAME.key` in `dir`: (its path, its address as 64 hex characters, the API's
/// form).
pub fn new_key(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(format!("{name}.key"));
    let made = stdout_json(&gridmesh(&[
        "keys",
        "new",
        "--out",
        path.to_str().unwrap(),
        "--json",
    ]));
    (
        path.display().to_string(),
        made["address"].as_str().unwrap().to_string(),
    )
}

/// The interop venv's Python (`GRIDMESH_PYTHON`, else `.venv`); a test without it fails.
pub fn python() -> std::path::PathBuf {
    gridmesh_refdata::require_python()
}

/// A reference peer that must be installed (`./scripts/setup` installs them all).
pub fn require_peer<T>(found: Option<T>, why: &str) -> T {
    found.unwrap_or_else(|| panic!("{why}"))
}

/// A script of `scripts/interop`.
pub fn interop_script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/interop")
        .join(name)
}

/// A process killed (and reaped) when dropped.
pub struct Killed(pub std::process::Child);

impl Killed {
    /// Fails the test at once if the process has ended (rather than at a wait's timeout).
    pub fn alive(&mut self, what: &str) {
        if let Ok(Some(status)) = self.0.try_wait() {
            panic!("{what} exited ({status}): see its stderr above");
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A peer of `scripts/interop` (`script` with `args`, on the venv's Python), once it printed
/// "ready".
pub fn start_ready_peer(script: &str, args: &[String], what: &str) -> Killed {
    use std::io::BufRead;
    let mut child = std::process::Command::new(python())
        .arg(interop_script(script))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "{what} did not start");
    Killed(child)
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto broker on a free port of 127.0.0.1 (killed on drop).
pub struct Mosquitto(gridmesh_tools::broker::LocalMosquitto);

impl std::ops::Deref for Mosquitto {
    type Target = gridmesh_tools::broker::LocalMosquitto;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        require_peer(
            gridmesh_tools::broker::mosquitto_binary(),
            "mosquitto is not installed: run ./scripts/setup",
        );
        Mosquitto(gridmesh_tools::broker::LocalMosquitto::start().expect("start mosquitto"))
    }
}

/// A node running a device gateway (its account funded with 10 tokens) on a broker, and an owner
/// account with 50 tokens.
pub struct GatewayNode {
    pub node: NodeProc,
    pub url: String,
    pub mqtt: String,
    pub owner_key: String,
    pub owner: String,
    pub faucet: String,
}

impl GatewayNode {
    pub fn start(dir: &Path, broker: &Mosquitto) -> GatewayNode {
        let data = dir.join("data");
        let (gw_key, gateway) = new_key(dir, "gateway");
        let mqtt = format!("127.0.0.1:{}", broker.port);
        let node = NodeProc::start(&data, &["--mqtt", &mqtt, "--gateway-key", &gw_key]);
        let url = node.url.clone();
        let faucet = data.join("faucet.key").display().to_string();
        let (owner_key, owner) = new_key(dir, "owner");
        // The gateway's pending transactions lock a deposit each: it needs a few tokens.
        for (to, amount) in [(&gateway, "10"), (&owner, "50")] {
            transfer(&url, &faucet, to, amount);
        }
        wait_for("the gateway to connect", || {
            get_json(&format!("{url}/v1/gateway"))["stats"]["connected"] == true
        });
        GatewayNode {
            node,
            url,
            mqtt,
            owner_key,
            owner,
            faucet,
        }
    }

    /// Registers a device of the owner with its own key ([`register_keyed_device`]).
    pub fn register_device(&self, device_key: &str, kind: &str, capacity_kw: &str, location: &str) {
        register_keyed_device(
            &self.url,
            &self.owner_key,
            device_key,
            kind,
            capacity_kw,
            location,
        );
    }

    /// Samples the gateway has accepted so far.
    pub fn accepted(&self) -> serde_json::Value {
        get_json(&format!("{}/v1/gateway", self.url))["stats"]["samples"]["accepted"].clone()
    }
}

/// GET `url` as JSON.
pub fn get_json(url: &str) -> serde_json::Value {
    ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_json()
        .unwrap()
}

/// A genesis file `genesis.toml` in `dir` starting now: chain `chain_id`, these accounts with 100
/// tokens each, `operator` (if any) as the market's grid operator, and `market_extra` lines in
/// its `[market]` table.
pub fn genesis_now(
    dir: &Path,
    chain_id: &str,
    accounts: &[&str],
    operator: Option<&str>,
    market_extra: &str,
) -> std::path::PathBuf {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut text = format!("chain_id = \"{chain_id}\"\ntimestamp_ms = {now_ms}\n");
    for a in accounts {
        text += &format!("[[accounts]]\naddress = \"{a}\"\nbalance = \"100\"\n");
    }
    if let Some(op) = operator {
        text += &format!("[market]\ngrid_operator = \"{op}\"\n{market_extra}");
    }
    let path = dir.join("genesis.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An 11 kW meter declared by the account with the key file `key` (a home that buys; the
/// device has no key of its own). The CLI's JSON answer.
pub fn register_meter(url: &str, key: &str) -> serde_json::Value {
    stdout_json(&gridmesh(&[
        "tx",
        "register-device",
        "--kind",
        "meter",
        "--capacity-kw",
        "11",
        "--key",
        key,
        "--node",
        url,
        "--json",
    ]))
}

/// The congestion example's feeder: two streets of ten homes on a 100 kVA transformer.
pub fn congestion_feeder() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/congestion/feeder.toml")
}
