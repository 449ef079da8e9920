//! One module per command: its arguments (clap) and what it does. Each parses its own arguments
//! into the library crates' types, calls them, and prints through `crate::output`.

pub mod agent;
pub mod bench;
pub mod demo;
pub mod device;
pub mod genesis;
pub mod grid;
pub mod home;
pub mod keys;
pub mod market;
pub mod node;
pub mod openadr;
pub mod query;
pub mod sim;
pub mod testnet;
pub mod tx;

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
