//! `gridmesh openadr`: the node's OpenADR 3 VTN, as its operator manages it.

use std::path::PathBuf;

use clap::Subcommand;
use gridmesh_node::openadr::vens;

use crate::output::print_json;

#[derive(Subcommand)]
pub(crate) enum OpenadrCommand {
    /// The VENs that may read the node's OpenADR 3 VTN (`/openadr/3`): a grid operator's or an
    /// aggregator's, or a home's for its own connection's envelope.
    #[command(subcommand)]
    Ven(VenCommand),
}

#[derive(Subcommand)]
pub(crate) enum VenCommand {
    /// Register a VEN and print its OAuth2 client id and secret, once (only a hash of the secret
    /// is kept). The running node takes it at once.
    Add {
        /// The node's data directory.
        #[arg(long, env = "GRIDMESH_DATA_DIR")]
        data_dir: PathBuf,
        /// A name for people, unique on this node.
        #[arg(long)]
        name: String,
        /// The connection (market area, e.g. street-1/home-4) whose operating envelope this VEN
        /// may read; without it, it reads only what every VEN does (prices, flexibility requests).
        #[arg(long)]
        connection: Option<String>,
        /// The key file of the connection's meter (registered on the ledger with its own key at
        /// that connection): the node keeps a copy and signs the VEN's usage reports as the
        /// meter's readings. The meter's account needs a little for the pool's deposit (0.01
        /// token a pending reading, returned).
        #[arg(long, requires = "connection", value_name = "FILE")]
        device_key: Option<PathBuf>,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List the registered VENs.
    List {
        /// The node's data directory.
        #[arg(long, env = "GRIDMESH_DATA_DIR")]
        data_dir: PathBuf,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove a VEN (by name or id): its tokens stop working at once.
    Remove {
        /// The node's data directory.
        #[arg(long, env = "GRIDMESH_DATA_DIR")]
        data_dir: PathBuf,
        /// The VEN's name or id.
        ven: String,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: OpenadrCommand) -> anyhow::Result<()> {
    let OpenadrCommand::Ven(command) = command;
    match command {
        VenCommand::Add {
            data_dir,
            name,
            connection,
            device_key,
            json,
        } => {
            let device = match &device_key {
                Some(path) => Some(
                    crate::keyfile::load(path).map_err(|e| anyhow::anyhow!("--device-key: {e}"))?,
                ),
                None => None,
            };
            let c = vens::add(
                &vens::path_in(&data_dir),
                &name,
                connection.as_deref(),
                device.as_ref(),
            )?;
            if json {
                print_json(&c)
            } else {
                println!("VEN {:?} registered as {}", c.name, c.id);
                println!("client_id:     {}", c.client_id);
                println!("client_secret: {}", c.client_secret);
                println!(
                    "Give both to the VEN; the secret is not shown again. Token URL: \
                     http://NODE/openadr/3/auth/token"
                );
                Ok(())
            }
        }
        VenCommand::List { data_dir, json } => {
            let list = vens::load(&vens::path_in(&data_dir))?;
            let rows: Vec<_> = list
                .iter()
                .map(|v| {
                    serde_json::json!({"id": v.id, "name": v.name, "connection": v.connection,
                        "client_id": v.client_id, "device": v.device})
                })
                .collect();
            if json {
                print_json(&rows)
            } else {
                if list.is_empty() {
                    println!("no VENs registered");
                }
                for v in &list {
                    println!(
                        "{}  {:<24}  {:<28}  {}{}",
                        v.id,
                        v.name,
                        v.connection.as_deref().unwrap_or("-"),
                        v.client_id,
                        v.device
                            .as_deref()
                            .map_or(String::new(), |d| format!("  meter {d}"))
                    );
                }
                Ok(())
            }
        }
        VenCommand::Remove {
            data_dir,
            ven,
            json,
        } => {
            let gone = vens::remove(&vens::path_in(&data_dir), &ven)?;
            if json {
                print_json(&serde_json::json!({"removed": gone.id, "name": gone.name}))
            } else {
                println!("VEN {:?} ({}) removed", gone.name, gone.id);
                Ok(())
            }
        }
    }
}
