//! `kill -9` the real node under load, several times, and check that every transaction it reported
//! committed survives, that no block is half-applied (the node refuses to start on a state that does
//! not match its head's state root), and that the token supply is unchanged.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::NodeProc;
use gridmesh_client::client::Client;
use gridmesh_ledger::{Keypair, SignedTx};
use gridmesh_types::{Address, Amount, Hash32};
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
struct Committed {
    hash: Hash32,
    height: u64,
    to: Address,
    amount: Amount,
}

/// Sends transfers from the faucet to fresh addresses in rounds, recording what the node reports
/// committed, until `stop` is set or the node goes away.
fn load(
    url: String,
    faucet: Keypair,
    chain_id: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Committed>>>,
    seed: u64,
) {
    let client = Client::new(&url);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Ok(acct) = client.account(&faucet.address()) else {
        return;
    };
    let mut nonce = acct.nonce;
    while !stop.load(Ordering::SeqCst) {
        let mut round = Vec::new();
        for _ in 0..40 {
            let to = Keypair::generate().address();
            let amount = Amount(rng.gen_range(1..1_000_000));
            let tx = SignedTx::transfer(&faucet, &chain_id, nonce, to, amount);
            match client.submit(&tx) {
                Ok(r) => round.push((r.hash.parse::<Hash32>().unwrap(), to, amount)),
                Err(_) => return,
            }
            nonce += 1;
        }
        for (hash, to, amount) in round {
            match client.wait_committed(&hash, Duration::from_secs(10)) {
                Ok(t) => seen.lock().unwrap().push(Committed {
                    hash,
                    height: t.height.unwrap(),
                    to,
                    amount,
                }),
                Err(_) => return,
            }
        }
    }
}

#[test]
fn kill_dash_nine_under_load_loses_no_committed_transaction() {
    let seed: u64 = std::env::var("GRIDMESH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ u64::from(std::process::id())
        });
    eprintln!("crash test seed {seed} (set GRIDMESH_TEST_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let all: Arc<Mutex<Vec<Committed>>> = Arc::default();
    let mut supply = None;

    for round in 0..6 {
        let node = NodeProc::start(&data, &[]);
        let client = Client::new(&node.url);
        let status = client.status().expect("status after restart");
        match supply {
            None => supply = Some(status.total_supply_base),
            Some(s) => assert_eq!(status.total_supply_base, s, "supply changed across a crash"),
        }
        // Everything reported committed before earlier crashes is still there, in the same block.
        for c in all.lock().unwrap().iter() {
            let t = client
                .tx(&c.hash)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: committed {} lost", c.hash));
            assert_eq!(t.status, "committed");
            assert_eq!(t.height, Some(c.height));
            let a = client.account(&c.to).unwrap();
            assert_eq!(
                a.balance_base, c.amount.0,
                "recipient of {} has the wrong balance",
                c.hash
            );
        }
        let faucet = Keypair::load(&data.join("faucet.key")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let loader = {
            let (url, stop, all) = (node.url.clone(), stop.clone(), all.clone());
            let chain_id = status.chain_id.clone();
            let s = rng.gen();
            std::thread::spawn(move || load(url, faucet, chain_id, stop, all, s))
        };
        let before = all.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(rng.gen_range(400..1500)));
        node.kill9();
        stop.store(true, Ordering::SeqCst);
        loader.join().unwrap();
        eprintln!(
            "round {round}: killed with {} newly committed transfers observed",
            all.lock().unwrap().len() - before
        );
    }
    let n = all.lock().unwrap().len();
    assert!(
        n > 50,
        "the load committed too little to mean anything ({n})"
    );

    // Final restart: everything is there and the chain keeps working.
    let node = NodeProc::start(&data, &[]);
    let client = Client::new(&node.url);
    for c in all.lock().unwrap().iter() {
        assert_eq!(client.tx(&c.hash).unwrap().unwrap().height, Some(c.height));
    }
    assert_eq!(client.status().unwrap().total_supply_base, supply.unwrap());
}

/// A data directory whose chain.redb was truncated (issue 24: the node began a new chain at height
/// 0 over 79 lost blocks) refuses to start and says how to restore; put back, the chain goes on.
#[test]
fn a_node_whose_chain_file_was_lost_refuses_to_start_until_it_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = NodeProc::start(&data, &["--empty-blocks"]);
    let client = Client::new(&node.url);
    common::wait_for("a few blocks", || client.status().unwrap().height >= 5);
    node.terminate();
    let chain = data.join("chain.redb");
    let backup = dir.path().join("chain.redb.backup");
    std::fs::copy(&chain, &backup).unwrap();
    std::fs::File::create(&chain).unwrap(); // truncated to 0 bytes
    let out = common::gridmesh(&[
        "node",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a node started on a lost chain: {err}"
    );
    assert!(
        err.contains("holds no chain") && err.contains("Restore chain.redb"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&chain).unwrap().len(), 0);
    std::fs::copy(&backup, &chain).unwrap();
    let node = NodeProc::start(&data, &[]);
    assert!(Client::new(&node.url).status().unwrap().height >= 5);
    node.terminate();
}

/// A node that keeps the last 1,000 blocks: older ones answer 410 with why (a block, a transaction
/// in one), `query status` says what was pruned, the state is whole, and the node restarts on its
/// pruned chain (and keeps pruning).
#[test]
fn a_node_keeping_a_window_of_blocks_answers_for_the_pruned_ones_and_restarts_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keep: Vec<String> = [
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--empty-blocks",
        "--block-interval-ms",
        "10",
        "--keep-blocks",
        "1000",
    ]
    .map(String::from)
    .to_vec();
    let few = common::gridmesh(&[
        "node",
        "--data-dir",
        data.to_str().unwrap(),
        "--keep-blocks",
        "10",
    ]);
    let err = String::from_utf8_lossy(&few.stderr);
    assert!(
        !few.status.success() && err.contains("keep_blocks 10 is too few"),
        "{err}"
    );
    let node = NodeProc::spawn(&keep);
    let client = Client::new(&node.url);
    let faucet = data.join("faucet.key");
    let (_, to) = common::new_key(dir.path(), "member");
    let sent = common::transfer(&node.url, faucet.to_str().unwrap(), &to, "1");
    let hash = sent["hash"].as_str().unwrap().to_string();
    let early = client
        .wait_committed(&hash.parse().unwrap(), Duration::from_secs(10))
        .unwrap()
        .height
        .unwrap();
    // Past the window: the blocks of the first 300 or so are gone (the unit test of the store
    // checks that the file stops growing).
    common::wait_for("height 1,300", || client.status().unwrap().height >= 1_300);
    let status = client.status().unwrap();
    assert!(
        status.oldest_block > status.height - 1_000 - 70 && status.oldest_block > early,
        "oldest block {} at height {}",
        status.oldest_block,
        status.height
    );
    let gone = ureq::get(&format!("{}/v1/blocks/{early}", node.url)).call();
    let Err(ureq::Error::Status(410, _)) = gone else {
        panic!("block {early}: {gone:?}");
    };
    let out = common::gridmesh(&["query", "block", &early.to_string(), "--node", &node.url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("was pruned"), "{err}");
    let out = common::gridmesh(&["query", "tx", &hash, "--node", &node.url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&hash) && err.contains("was pruned"),
        "{err}"
    );
    let out = common::gridmesh(&["query", "status", "--node", &node.url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("were pruned"), "{text}");
    assert!(
        client.block(Some(status.height)).is_ok(),
        "the head is kept"
    );
    assert!(client.block(Some(0)).is_ok(), "genesis is kept");
    // The member's balance (state) is whole.
    assert_eq!(
        client.account(&to.parse().unwrap()).unwrap().balance_base,
        1_000_000
    );
    node.terminate();
    let node = NodeProc::spawn(&keep);
    let client = Client::new(&node.url);
    let restarted = client.status().unwrap();
    common::wait_for("blocks after the restart", || {
        client.status().unwrap().oldest_block > restarted.oldest_block
    });
    node.terminate();
}

/// `gridmesh node snapshot` of a stopped node and `gridmesh node restore` into a new directory:
/// the restored node starts at the snapshot's block with the same state and goes on; a running
/// node's directory, a damaged file and a directory with a chain are refused with why.
#[test]
fn a_snapshot_restores_into_a_node_that_goes_on_from_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = NodeProc::start(&data, &["--empty-blocks"]);
    let (_, to) = common::new_key(dir.path(), "member");
    let faucet = data.join("faucet.key");
    let sent = common::transfer(&node.url, faucet.to_str().unwrap(), &to, "2.5");
    let client = Client::new(&node.url);
    client
        .wait_committed(
            &sent["hash"].as_str().unwrap().parse().unwrap(),
            Duration::from_secs(10),
        )
        .unwrap();
    let file = dir.path().join("chain.snapshot");
    let snapshot = |args: &[&str]| {
        let mut all = vec!["node"];
        all.extend_from_slice(args);
        common::gridmesh(&all)
    };
    let running = snapshot(&[
        "snapshot",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&running.stderr);
    assert!(
        !running.status.success() && err.contains("Stop it first"),
        "{err}"
    );
    node.terminate();
    let wrote = snapshot(&[
        "snapshot",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&wrote.stdout);
    assert!(
        wrote.status.success() && text.starts_with("wrote "),
        "{text}"
    );
    let height: u64 = text
        .split(" at block ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();

    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    // A development chain's genesis comes from its faucet key.
    std::fs::copy(&faucet, copy.join("faucet.key")).unwrap();
    let restore = |from: &std::path::Path, to: &std::path::Path| {
        snapshot(&[
            "restore",
            "--snapshot",
            from.to_str().unwrap(),
            "--data-dir",
            to.to_str().unwrap(),
        ])
    };
    let mut damaged = std::fs::read(&file).unwrap();
    let last = damaged.len() - 40;
    damaged[last] ^= 1;
    let bad = dir.path().join("damaged.snapshot");
    std::fs::write(&bad, damaged).unwrap();
    let refused = restore(&bad, &copy);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("is damaged"),
        "{err}"
    );
    let refused = restore(&file, &data);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("already holds a chain"),
        "{err}"
    );
    let restored = restore(&file, &copy);
    assert!(restored.status.success(), "{restored:?}");

    let node = NodeProc::start(&copy, &["--empty-blocks"]);
    let client = Client::new(&node.url);
    let status = client.status().unwrap();
    assert!(status.height >= height, "{} < {height}", status.height);
    assert_eq!(status.oldest_block, height + 1);
    assert_eq!(
        client.account(&to.parse().unwrap()).unwrap().balance_base,
        2_500_000
    );
    let again = common::transfer(
        &node.url,
        copy.join("faucet.key").to_str().unwrap(),
        &to,
        "1",
    );
    client
        .wait_committed(
            &again["hash"].as_str().unwrap().parse().unwrap(),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(
        client.account(&to.parse().unwrap()).unwrap().balance_base,
        3_500_000
    );
    node.terminate();
}
