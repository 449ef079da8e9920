//! `gridmesh testnet`: write and start a local BFT network.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::cmd::{runtime, shutdown_signal};

#[derive(Args)]
pub(crate) struct TestnetArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Number of full nodes (follow the validators, no vote).
    #[arg(long, default_value_t = 0)]
    full_nodes: usize,
    /// Directory for keys, genesis, configs and data (reused if it already holds a testnet).
    #[arg(long)]
    dir: PathBuf,
    /// First p2p port; validator i uses BASE+i for p2p and BASE+100+i for its API.
    #[arg(long, default_value_t = gridmesh_tools::testnet::DEFAULT_BASE_PORT)]
    base_port: u16,
    /// Write the files and exit without starting the validators.
    #[arg(long)]
    init_only: bool,
}

pub(crate) fn run(a: TestnetArgs) -> anyhow::Result<()> {
    let t = gridmesh_tools::testnet::init_with(
        &a.dir,
        a.validators,
        a.full_nodes,
        a.base_port,
        vec![],
    )?;
    eprintln!(
        "testnet {} in {}: {} validators (genesis {}, faucet key {})",
        t.chain_id,
        a.dir.display(),
        t.validators.len(),
        a.dir.join("genesis.toml").display(),
        a.dir.join("faucet.key").display()
    );
    if a.init_only {
        for i in 0..t.validators.len() {
            println!(
                "validator {i}: gridmesh node --config {}",
                t.config_path(&a.dir, i).display()
            );
        }
        for j in 0..t.full_nodes.len() {
            println!(
                "full node {j}: gridmesh node --config {}",
                t.full_node_config_path(&a.dir, j).display()
            );
        }
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the gridmesh binary")?;
    let mut children = Vec::new();
    let nodes = t
        .validators
        .iter()
        .map(|v| ("validator", "v", v))
        .chain(t.full_nodes.iter().map(|f| ("full node", "f", f)));
    for (what, prefix, v) in nodes {
        let i = v.index;
        let log_path = a.dir.join(format!("{prefix}{i}/node.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = std::process::Command::new(&exe)
            .args(["node", "--config"])
            .arg(a.dir.join(&v.config))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {what} {i}"))?;
        println!(
            "{what} {i}: api http://{} p2p {} address {} (log {})",
            v.api,
            v.p2p,
            v.address,
            log_path.display()
        );
        children.push(child);
    }
    eprintln!("running; Ctrl-C stops all validators");
    let mut reported = vec![false; children.len()];
    runtime()?.block_on(async {
        loop {
            tokio::select! {
                _ = shutdown_signal() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    for (i, c) in children.iter_mut().enumerate() {
                        if let Ok(Some(status)) = c.try_wait() {
                            if !reported[i] {
                                eprintln!("node {i} exited ({status}); see its node.log");
                                reported[i] = true;
                            }
                        }
                    }
                }
            }
        }
    });
    for c in &children {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for mut c in children {
        let _ = c.wait();
    }
    Ok(())
}
