//! A community on several hosts (issue 24): four validators, each in its own network namespace
//! (its own interface and address on a bridge, its own hosts file), reach each other by host
//! name, not on 127.0.0.1. Each makes its key and genesis entry on its own "host", the operator
//! assembles the genesis, every host computes the same hash, each node runs from its config
//! file alone, and a transfer sent to one validator is final on all four.
//!
//! Needs root and iproute2 (`./scripts/setup` installs it): the test fails without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::BIN;
use gridmesh_client::client::Client;
use gridmesh_ledger::{Keypair, SignedTx};
use gridmesh_types::{Address, Amount};

const N: usize = 4;

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e} (./scripts/setup installs iproute2)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Namespaces, a bridge and hosts files, removed on drop (with the nodes in them).
struct Hosts {
    prefix: String,
    subnet: String,
    nodes: Vec<Child>,
}

impl Hosts {
    fn ns(&self, i: usize) -> String {
        format!("{}v{i}", self.prefix)
    }

    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    fn name(i: usize) -> String {
        format!("validator-{i}.coop.test")
    }

    fn create() -> Hosts {
        let uid = run("id", &["-u"]);
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "network namespaces need root"
        );
        let pid = std::process::id();
        let hosts = Hosts {
            prefix: format!("gm{}", pid % 10_000),
            subnet: format!("10.231.{}", pid % 200 + 20),
            nodes: Vec::new(),
        };
        let br = format!("{}br", hosts.prefix);
        run("ip", &["link", "add", &br, "type", "bridge"]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}.254/24", hosts.subnet),
                "dev",
                &br,
            ],
        );
        run("ip", &["link", "set", &br, "up"]);
        let mut table = String::from("127.0.0.1 localhost\n");
        for i in 0..N {
            table.push_str(&format!("{} {}\n", hosts.ip(i), Hosts::name(i)));
        }
        for i in 0..N {
            let ns = hosts.ns(i);
            let (outer, inner) = (format!("{ns}h"), format!("{ns}n"));
            run("ip", &["netns", "add", &ns]);
            run(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ],
            );
            run("ip", &["link", "set", &inner, "netns", &ns]);
            run("ip", &["link", "set", &outer, "master", &br, "up"]);
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                run("ip", &all);
            };
            inside(&["addr", "add", &format!("{}/24", hosts.ip(i)), "dev", &inner]);
            inside(&["link", "set", &inner, "up"]);
            inside(&["link", "set", "lo", "up"]);
            // `ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts for what it runs.
            let etc = PathBuf::from(format!("/etc/netns/{ns}"));
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(etc.join("hosts"), &table).unwrap();
        }
        hosts
    }

    /// `gridmesh ARGS` on host `i`.
    fn gridmesh(&self, i: usize, args: &[&str]) -> Output {
        let ns = self.ns(i);
        let mut all = vec!["netns", "exec", &ns, BIN];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn start(&mut self, i: usize, config: &Path, log: &Path) {
        let ns = self.ns(i);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, BIN, "node", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.nodes.push(child);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..N {
            let ns = self.ns(i);
            // The pair goes with either end; the namespace's end can outlive its name.
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{ns}h")])
                .output();
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}br", self.prefix)])
            .output();
    }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn four_validators_on_their_own_hosts_find_each_other_by_name() {
    let mut hosts = Hosts::create();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // On each host: its key and its entry, by its host name.
    let mut entries = Vec::new();
    for i in 0..N {
        let home = dir.join(format!("v{i}"));
        std::fs::create_dir_all(&home).unwrap();
        let key = home.join("validator.key");
        hosts.gridmesh(i, &["keys", "new", "--out", key.to_str().unwrap()]);
        let entry = home.join("entry.toml");
        hosts.gridmesh(
            i,
            &[
                "genesis",
                "validator",
                "--key",
                key.to_str().unwrap(),
                "--p2p-address",
                &format!("{}:26600", Hosts::name(i)),
                "--out",
                entry.to_str().unwrap(),
            ],
        );
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(!text.contains("secret"), "{text}");
        entries.push(entry);
    }
    // The operator assembles it; every host computes the same hash.
    let treasurer = Keypair::generate();
    let treasurer_file = dir.join("treasurer.key");
    treasurer.save(&treasurer_file).unwrap();
    let genesis = dir.join("genesis.toml");
    let mut args = vec![
        "genesis".to_string(),
        "assemble".into(),
        "--chain-id".into(),
        "coop-hosts".into(),
        "--account".into(),
        format!("{}=1000", treasurer.address().checksummed()),
        "--out".into(),
        genesis.display().to_string(),
    ];
    for e in &entries {
        args.extend(["--validator".into(), e.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let assembled = String::from_utf8(run(BIN, &args).stdout).unwrap();
    let hash = assembled
        .trim()
        .strip_prefix("genesis hash ")
        .unwrap_or_else(|| panic!("{assembled}"))
        .to_string();
    for i in 0..N {
        let out = hosts.gridmesh(
            i,
            &[
                "genesis",
                "hash",
                "--genesis",
                genesis.to_str().unwrap(),
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["genesis_hash"], hash.as_str(), "host {i}");
        assert_eq!(v["validators"], N);
    }

    // Each node from its config file alone, listening on its host name.
    for i in 0..N {
        let home = dir.join(format!("v{i}"));
        let config = home.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\nlisten = \"{}:8645\"\ngenesis = \"../genesis.toml\"\nvalidator_key = \"validator.key\"\n",
                Hosts::name(i)
            ),
        )
        .unwrap();
        hosts.start(i, &config, &home.join("node.log"));
    }
    let clients: Vec<Client> = (0..N)
        .map(|i| Client::new(&format!("http://{}:8645", hosts.ip(i))))
        .collect();
    let log =
        |i: usize| std::fs::read_to_string(dir.join(format!("v{i}/node.log"))).unwrap_or_default();
    for (i, c) in clients.iter().enumerate() {
        wait_until(
            &format!("validator {i}'s API"),
            Duration::from_secs(30),
            || c.status().is_ok(),
        );
        let status = c.status().unwrap();
        assert_eq!(status.genesis_hash, hash, "validator {i}: {}", log(i));
        assert_eq!(status.consensus, "bft");
    }
    wait_until("blocks on every validator", Duration::from_secs(60), || {
        clients
            .iter()
            .all(|c| c.status().map(|s| s.height >= 3).unwrap_or(false))
    });
    // Each validator is connected to the three others, at their addresses on the bridge.
    for i in 0..N {
        let url = format!("http://{}:8645/metrics", hosts.ip(i));
        wait_until(
            &format!("validator {i}'s peers"),
            Duration::from_secs(30),
            || {
                ureq::get(&url)
                    .call()
                    .ok()
                    .and_then(|r| r.into_string().ok())
                    .is_some_and(|m| m.contains("gridmesh_bft_peers_connected 3\n"))
            },
        );
    }
    // A transfer sent to validator 0 is final on validator 3.
    let chain_id = clients[0].status().unwrap().chain_id;
    let tx = SignedTx::transfer(
        &treasurer,
        &chain_id,
        0,
        Address([7; 32]),
        Amount(2_500_000),
    );
    let accepted = clients[0].submit(&tx).unwrap();
    let committed = clients[0]
        .wait_committed(&accepted.hash.parse().unwrap(), Duration::from_secs(60))
        .unwrap();
    let height = committed.height.unwrap();
    wait_until(
        "the transfer on validator 3",
        Duration::from_secs(30),
        || {
            clients[3]
                .tx(&accepted.hash.parse().unwrap())
                .ok()
                .flatten()
                .is_some_and(|t| t.height == Some(height))
        },
    );
    assert_eq!(
        clients[3].account(&Address([7; 32])).unwrap().balance_base,
        2_500_000
    );
    let prefix = hosts.prefix.clone();
    drop(hosts);
    // Nothing is left behind on the machine.
    let links = String::from_utf8(run("ip", &["-o", "link"]).stdout).unwrap();
    assert!(!links.contains(&prefix), "{links}");
    let namespaces = String::from_utf8(run("ip", &["netns", "list"]).stdout).unwrap();
    assert!(!namespaces.contains(&prefix), "{namespaces}");
}
